//! A TCP proxy on loopback that a test can cut and restore: the gateway talks to its database
//! through it, so a test can take the database away for a moment without stopping the machine's
//! PostgreSQL, which other tests are using at the same time. Given several targets it is a
//! round-robin load balancer that skips a target that refuses connections (an instance that was
//! killed), as a load balancer's health check would.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A running proxy; dropping it stops it.
#[derive(Debug)]
pub struct Proxy {
    /// `host:port` to connect to instead of the target.
    pub addr: String,
    up: Arc<AtomicBool>,
    /// Bumped on every cut, so the copies of the connections open then end.
    cuts: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Forwards connections on a free loopback port to `target` (`host:port`).
    pub async fn start(target: &str) -> Self {
        Self::balance(vec![target.to_owned()]).await
    }

    /// Spreads connections on a free loopback port over `targets` (`host:port` each), in turn.
    pub async fn balance(targets: Vec<String>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
        let addr = listener.local_addr().expect("the proxy's address").to_string();
        let up = Arc::new(AtomicBool::new(true));
        let (cuts, _) = watch::channel(0u64);
        let targets = Arc::new(targets);
        let next = Arc::new(AtomicUsize::new(0));
        let task = {
            let up = up.clone();
            let cuts = cuts.clone();
            tokio::spawn(async move {
                while let Ok((inbound, _)) = listener.accept().await {
                    if !up.load(Ordering::SeqCst) {
                        // Down: the connection is refused the way a stopped server's would be.
                        drop(inbound);
                        continue;
                    }
                    let (targets, next) = (targets.clone(), next.clone());
                    let mut cut = cuts.subscribe();
                    tokio::spawn(async move {
                        let Some(outbound) = connect_any(&targets, &next).await else { return };
                        let (mut a, mut b) = (inbound, outbound);
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut a, &mut b) => {}
                            _ = cut.changed() => {}
                        }
                    });
                }
            })
        };
        Self { addr, up, cuts, task }
    }

    /// Takes the target away: open connections are dropped and new ones closed at once.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.cuts.send_modify(|n| *n += 1);
    }

    /// Brings the target back.
    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// A connection to the next target in turn that accepts one.
async fn connect_any(targets: &[String], next: &AtomicUsize) -> Option<TcpStream> {
    let start = next.fetch_add(1, Ordering::SeqCst);
    for i in 0..targets.len() {
        if let Ok(s) = TcpStream::connect(&targets[(start + i) % targets.len()]).await {
            return Some(s);
        }
    }
    None
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A server that answers each connection with `tag` and closes it.
    async fn tagged_server(tag: &'static [u8]) -> String {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr").to_string();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let _ = s.write_all(tag).await;
            }
        });
        addr
    }

    async fn read_through(addr: &str) -> Vec<u8> {
        let mut s = TcpStream::connect(addr).await.expect("the proxy accepts");
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf).await;
        buf
    }

    #[tokio::test]
    async fn a_cut_proxy_passes_nothing_until_restored() {
        let proxy = Proxy::start(&tagged_server(b"db").await).await;
        assert_eq!(read_through(&proxy.addr).await, b"db");
        proxy.cut();
        assert!(read_through(&proxy.addr).await.is_empty());
        proxy.restore();
        assert_eq!(read_through(&proxy.addr).await, b"db");
    }

    #[tokio::test]
    async fn the_balancer_takes_turns_and_skips_a_dead_target() {
        let dead = {
            let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            l.local_addr().expect("addr").to_string()
        };
        let a = tagged_server(b"a").await;
        let b = tagged_server(b"b").await;
        let lb = Proxy::balance(vec![a, dead, b]).await;
        let mut seen = Vec::new();
        for _ in 0..3 {
            seen.push(read_through(&lb.addr).await);
        }
        seen.sort();
        assert_eq!(seen, vec![b"a".to_vec(), b"b".to_vec(), b"b".to_vec()]);
    }
}
