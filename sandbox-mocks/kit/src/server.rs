//! Serving a mock's router, and the HTTP client its notifications go out with.
//!
//! Header names go out in the channels' case. HTTP says header names are case-insensitive, but
//! SDKs in the field look some up case-sensitively (WeChat's Java SDK finds no
//! `Wechatpay-Timestamp` in `wechatpay-timestamp`), so a sandbox must write them as the channel
//! does. hyper writes HTTP/1 header names lower-cased unless asked for title case
//! (`title_case_headers`, on both its server builder and reqwest's client builder); its way of
//! carrying other cases (`preserve_header_case`) keeps the case in a private extension a handler
//! cannot set. So the server writes title case, and the few names whose channel case is not title
//! case ([`CHANNEL_CASE`]) are put right in the head of each answer as it is written.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Header names the channels write in a case other than title case, as they write them. Title
/// case turns each into a name of the same length, which is rewritten in place.
pub const CHANNEL_CASE: &[&str] = &["Request-ID"];

/// Serves `router` on `listener` over HTTP/1 with header names in the channels' case, until the
/// process ends. A failed accept (a connection reset before it was taken, too many open files) is
/// logged and the loop goes on, as `axum::serve` does.
pub async fn serve(listener: TcpListener, router: Router) -> io::Result<()> {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.title_case_headers(true);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                if !is_connection_error(&e) {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                continue;
            }
        };
        let service = TowerToHyperService::new(router.clone());
        let connection = http.serve_connection(TokioIo::new(ChannelCase(stream)), service);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Serves `router` on `listener` in the background: the address it is bound to (port 0 picks
/// one) and the task, which ends only on an I/O error or when aborted.
pub fn start(
    listener: TcpListener,
    router: Router,
) -> io::Result<(SocketAddr, JoinHandle<io::Result<()>>)> {
    let addr = listener.local_addr()?;
    Ok((addr, tokio::spawn(serve(listener, router))))
}

/// The client notifications are posted with; `timeout` bounds one send. Header names go out in
/// title case, as the channels send them (none of them sends a notification header whose case
/// differs from title case).
pub fn http_client(timeout: Option<Duration>) -> reqwest::Client {
    let builder = reqwest::Client::builder().http1_title_case_headers();
    let builder = match timeout {
        Some(t) => builder.timeout(t),
        None => builder,
    };
    // Building fails only when the TLS backend cannot start, and then the default client fails
    // the same way; there is no configuration here that could be wrong.
    builder.build().unwrap_or_default()
}

/// A connection whose outgoing answer heads get the names of [`CHANNEL_CASE`] in their case.
///
/// hyper writes a response's head at the start of one write (it flattens head and body into one
/// buffer when the stream does not write vectored, as here). A write that starts with `HTTP/1.`
/// and holds the head's end is rewritten within the head; the body is never touched. A head that
/// the socket took only in part (a full send buffer) would keep title case for the rest.
struct ChannelCase(TcpStream);

impl AsyncRead for ChannelCase {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for ChannelCase {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match in_channel_case(buf) {
            Some(fixed) => Pin::new(&mut self.0).poll_write(cx, &fixed),
            None => Pin::new(&mut self.0).poll_write(cx, buf),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// `buf` with the head's header names of [`CHANNEL_CASE`] in their channel case, or `None` when
/// `buf` does not start with a whole response head or has none of them. Same length as `buf`.
fn in_channel_case(buf: &[u8]) -> Option<Vec<u8>> {
    if !buf.starts_with(b"HTTP/1.") {
        return None;
    }
    let head_len = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let mut out: Option<Vec<u8>> = None;
    let mut line_start = 0;
    while let Some(eol) = buf[line_start..head_len].windows(2).position(|w| w == b"\r\n") {
        line_start += eol + 2;
        let line = &buf[line_start..head_len];
        for name in CHANNEL_CASE {
            let n = name.len();
            if line.len() > n && line[n] == b':' && line[..n].eq_ignore_ascii_case(name.as_bytes())
            {
                let out = out.get_or_insert_with(|| buf.to_vec());
                out[line_start..line_start + n].copy_from_slice(name.as_bytes());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::in_channel_case;

    #[test]
    fn request_id_gets_its_channel_case_in_the_head_only() {
        let written =
            b"HTTP/1.1 200 OK\r\nRequest-Id: 1\r\nContent-Length: 14\r\n\r\nRequest-Id: 2\r\n";
        let fixed = in_channel_case(written).map(String::from_utf8);
        assert_eq!(
            fixed,
            Some(Ok(
                "HTTP/1.1 200 OK\r\nRequest-ID: 1\r\nContent-Length: 14\r\n\r\nRequest-Id: 2\r\n"
                    .into()
            ))
        );
    }

    #[test]
    fn writes_without_a_whole_head_or_the_name_are_left_alone() {
        assert_eq!(in_channel_case(b"Request-Id: 1\r\n\r\n"), None);
        assert_eq!(in_channel_case(b"HTTP/1.1 200 OK\r\nRequest-Id: 1\r\n"), None);
        assert_eq!(in_channel_case(b"HTTP/1.1 200 OK\r\nX-Request-Id: 1\r\n\r\n"), None);
        assert_eq!(in_channel_case(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), None);
    }
}
