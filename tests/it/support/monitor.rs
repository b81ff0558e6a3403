//! The commands clients send a `redis-server`, one per round trip, as `MONITOR` shows them.
//!
//! `INFO commandstats` counts the commands a script runs as well as the script itself, so it
//! cannot tell one round trip that ran a script from several commands. `MONITOR` can: it
//! prints a script's own commands with `lua` where a client's address would be.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::redis_server::{connection, RedisServer};

/// Commands left out: the local cache's heartbeat and server checks, and connection setup.
const BACKGROUND: &[&str] = &["ping", "info", "hello", "client", "echo"];

/// A `MONITOR` connection to one server, collecting what clients send.
pub struct Monitor {
    url: String,
    lines: mpsc::Receiver<String>,
}

impl Monitor {
    pub fn start(server: &RedisServer) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", server.port)).expect("connect to monitor");
        let mut writer = stream.try_clone().expect("clone monitor stream");
        writer.write_all(b"MONITOR\r\n").expect("send MONITOR");
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { return };
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        let monitor = Self {
            url: server.url(),
            lines,
        };
        // Everything before this point is someone else's.
        monitor.take();
        monitor
    }

    /// The names (lower case) of the commands clients sent since the last call, one per round
    /// trip, in order; a script's own commands and background chatter are left out.
    pub fn take(&self) -> Vec<String> {
        self.take_with_arguments()
            .into_iter()
            .map(|mut words| words.swap_remove(0))
            .collect()
    }

    /// [`take`](Self::take) with each command's arguments: the name (lower case), then its
    /// arguments as `MONITOR` quotes them, without the quotes.
    pub fn take_with_arguments(&self) -> Vec<Vec<String>> {
        // A marker sent after everything of interest: once MONITOR shows it, it has shown all
        // that came before.
        let marker = format!("marker-{}", rand_suffix());
        let mut conn = connection(&self.url).expect("marker connection");
        let _: String = redis::cmd("ECHO")
            .arg(&marker)
            .query(&mut conn)
            .expect("send marker");
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut sent = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).expect("MONITOR went quiet");
            if line.contains(&marker) {
                return sent;
            }
            if let Some(words) = client_command(&line) {
                if !BACKGROUND.contains(&words[0].as_str()) {
                    sent.push(words);
                }
            }
        }
    }
}

/// The command of a `MONITOR` line sent by a client (not by a script), name (lower case) and
/// arguments: `+1700000000.123456 [0 127.0.0.1:50000] "HMGET" "key" ...`. Arguments with a
/// quote or a backslash in them come out as `MONITOR` escapes them.
fn client_command(line: &str) -> Option<Vec<String>> {
    let (_, rest) = line.split_once(" [")?;
    let (source, command) = rest.split_once("] ")?;
    if source.ends_with(" lua") {
        return None;
    }
    let mut words: Vec<String> = command
        .split("\" \"")
        .map(|word| word.trim_matches('"').to_owned())
        .collect();
    let name = words.first_mut()?;
    *name = name.to_ascii_lowercase();
    Some(words)
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(Instant::now())
}
