//! A TCP proxy between apps and Redis whose link can be made slow, silent or broken while the
//! apps run: the network faults of the chaos test.
//!
//! Unlike [`Forwarder`](super::forwarder::Forwarder), which only chooses where new connections
//! go, this one acts on connections that are already open, because that is where a client
//! library's recovery is tested: a pooled connection that goes quiet, slow or dead under it.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

/// What the link does to the bytes on it, both ways.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Bytes flow at once.
    Pass,
    /// Each chunk is delivered this long after the proxy read it, in order: latency without a
    /// bandwidth limit.
    Delay(Duration),
    /// Nothing flows, on open connections or new ones (which are accepted, then held). The
    /// bytes wait in the proxy and flow once the mode changes, as TCP's retransmissions would
    /// deliver them when a partition heals.
    Blackhole,
    /// Every open connection is closed, and new ones are closed as soon as they are accepted:
    /// a peer that resets.
    Drop,
}

/// One proxied connection.
struct Link {
    client: TcpStream,
    server: TcpStream,
    /// Set by [`ChaosProxy::sever`]: nothing on this connection is delivered again, either way,
    /// and it is never closed by the proxy either.
    severed: AtomicBool,
    closed: AtomicBool,
}

impl Link {
    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let _ = self.client.shutdown(Shutdown::Both);
        let _ = self.server.shutdown(Shutdown::Both);
    }
}

struct Shared {
    mode: Mutex<Mode>,
    changed: Condvar,
    links: Mutex<Vec<Arc<Link>>>,
    stopped: AtomicBool,
}

impl Shared {
    fn mode(&self) -> MutexGuard<'_, Mode> {
        self.mode.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn links(&self) -> MutexGuard<'_, Vec<Arc<Link>>> {
        self.links.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until a chunk read at `read_at` may be written, or returns `false` if it must be
    /// thrown away.
    fn deliverable(&self, link: &Link, read_at: Instant) -> bool {
        let mut mode = self.mode();
        loop {
            if link.severed.load(Ordering::SeqCst) {
                return false;
            }
            if self.stopped.load(Ordering::SeqCst) || link.closed.load(Ordering::SeqCst) {
                return false;
            }
            let wait = match *mode {
                Mode::Pass => return true,
                Mode::Drop => return false,
                Mode::Delay(delay) => {
                    let now = Instant::now();
                    let due = read_at + delay;
                    if now >= due {
                        return true;
                    }
                    due - now
                }
                // Woken by the next mode change; the timeout only bounds a missed wake-up.
                Mode::Blackhole => Duration::from_millis(100),
            };
            mode = self
                .changed
                .wait_timeout(mode, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// A proxy on a free port of 127.0.0.1 to `127.0.0.1:target_port`, in [`Mode::Pass`] until
/// told otherwise. Dropping it closes every connection.
pub struct ChaosProxy {
    pub port: u16,
    shared: Arc<Shared>,
}

impl ChaosProxy {
    pub fn start(target_port: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = listener.local_addr().unwrap().port();
        let target = SocketAddr::from(([127, 0, 0, 1], target_port));
        let shared = Arc::new(Shared {
            mode: Mutex::new(Mode::Pass),
            changed: Condvar::new(),
            links: Mutex::new(Vec::new()),
            stopped: AtomicBool::new(false),
        });
        let accepting = Arc::clone(&shared);
        thread::Builder::new()
            .name("chaos-proxy-accept".into())
            .spawn(move || accept_loop(listener, target, accepting))
            .expect("spawn the proxy");
        Self { port, shared }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.shared.mode() = mode;
        if mode == Mode::Drop {
            for link in self.shared.links().drain(..) {
                link.close();
            }
        }
        self.shared.changed.notify_all();
    }

    /// Makes every connection open now go silent for good, both ways, without closing it, while
    /// new connections pass: what a client sees when a firewall or NAT on the path forgets the
    /// connection, or the server's host vanishes without a reset. Only a timeout of the
    /// client's own can tell such a connection from a slow one.
    pub fn sever(&self) {
        for link in self.shared.links().iter() {
            link.severed.store(true, Ordering::SeqCst);
        }
        self.shared.changed.notify_all();
    }
}

impl Drop for ChaosProxy {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        for link in self.shared.links().drain(..) {
            link.close();
        }
        self.shared.changed.notify_all();
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn accept_loop(listener: TcpListener, target: SocketAddr, shared: Arc<Shared>) {
    for client in listener.incoming() {
        if shared.stopped.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        if *shared.mode() == Mode::Drop {
            drop(client);
            continue;
        }
        let Ok(server) = TcpStream::connect(target) else {
            drop(client);
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let Ok(link) = open_link(client, server) else {
            continue;
        };
        let mut links = shared.links();
        links.retain(|link| !link.closed.load(Ordering::SeqCst));
        links.push(Arc::clone(&link));
        drop(links);
        let (Ok(from_client), Ok(to_server), Ok(from_server), Ok(to_client)) = (
            link.client.try_clone(),
            link.server.try_clone(),
            link.server.try_clone(),
            link.client.try_clone(),
        ) else {
            link.close();
            continue;
        };
        pump(&shared, &link, from_client, to_server);
        pump(&shared, &link, from_server, to_client);
    }
}

fn open_link(client: TcpStream, server: TcpStream) -> io::Result<Arc<Link>> {
    Ok(Arc::new(Link {
        client,
        server,
        severed: AtomicBool::new(false),
        closed: AtomicBool::new(false),
    }))
}

/// Copies `from` to `to` through a queue, so that a held or delayed chunk never stops the
/// reading: the sender's writes succeed as they would on a real network, whose buffers are
/// the proxy's queue here.
fn pump(shared: &Arc<Shared>, link: &Arc<Link>, mut from: TcpStream, mut to: TcpStream) {
    let (queue, chunks) = mpsc::channel::<(Instant, Vec<u8>)>();
    thread::Builder::new()
        .name("chaos-proxy-read".into())
        .spawn(move || {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match from.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if queue.send((Instant::now(), buf[..n].to_vec())).is_err() {
                            return;
                        }
                    }
                }
            }
        })
        .expect("spawn a proxy reader");
    let shared = Arc::clone(shared);
    let link = Arc::clone(link);
    thread::Builder::new()
        .name("chaos-proxy-write".into())
        .spawn(move || {
            // Ends when the reader does (its side closed), after the queue is written out.
            while let Ok((read_at, chunk)) = chunks.recv() {
                if !shared.deliverable(&link, read_at) {
                    if link.severed.load(Ordering::SeqCst) {
                        continue;
                    }
                    break;
                }
                if to.write_all(&chunk).is_err() {
                    break;
                }
            }
            // A severed connection stays open, silent: closing it would tell the client.
            if !link.severed.load(Ordering::SeqCst) || shared.stopped.load(Ordering::SeqCst) {
                link.close();
            }
        })
        .expect("spawn a proxy writer");
}
