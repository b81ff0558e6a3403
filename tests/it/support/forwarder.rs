//! A TCP forwarder whose target can be switched at runtime: what a virtual IP, a DNS name or a
//! service address looks like to a client when it moves to another server. Connections made
//! before a switch keep their old server; new ones reach the new one.

use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

pub struct Forwarder {
    pub port: u16,
    target: Arc<Mutex<SocketAddr>>,
    stopped: Arc<AtomicBool>,
}

impl Forwarder {
    /// Listens on a free port and forwards every connection to `127.0.0.1:target_port`.
    pub fn start(target_port: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the forwarder");
        let port = listener.local_addr().unwrap().port();
        let target = Arc::new(Mutex::new(SocketAddr::from(([127, 0, 0, 1], target_port))));
        let stopped = Arc::new(AtomicBool::new(false));
        {
            let target = Arc::clone(&target);
            let stopped = Arc::clone(&stopped);
            thread::spawn(move || {
                for client in listener.incoming() {
                    if stopped.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(client) = client else { continue };
                    let to = *target.lock().unwrap();
                    match TcpStream::connect(to) {
                        Ok(server) => pipe(client, server),
                        Err(_) => drop(client),
                    }
                }
            });
        }
        Self {
            port,
            target,
            stopped,
        }
    }

    /// Sends new connections to `127.0.0.1:target_port`.
    pub fn switch_to(&self, target_port: u16) {
        *self.target.lock().unwrap() = SocketAddr::from(([127, 0, 0, 1], target_port));
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Copies both ways; when either side closes, both are closed, so a client sees its server go.
fn pipe(client: TcpStream, server: TcpStream) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let halves =
        || -> io::Result<(TcpStream, TcpStream)> { Ok((client.try_clone()?, server.try_clone()?)) };
    let Ok((client_reader, server_reader)) = halves() else {
        return;
    };
    let copy = |mut from: TcpStream, mut to: TcpStream, other: TcpStream| {
        thread::spawn(move || {
            let _ = io::copy(&mut from, &mut to);
            let _ = to.shutdown(Shutdown::Both);
            let _ = other.shutdown(Shutdown::Both);
        })
    };
    let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    copy(client_reader, server, c2);
    copy(server_reader, client, s2);
}
