//! Getting a batch to a sink and knowing it arrived: HTTP POST (acknowledged by a 2xx
//! answer) and syslog over TCP or TLS (RFC 5424 messages, octet-counting framing per RFC 6587
//! §3.4.1). TLS is OpenSSL through native-tls, the one TLS stack in the tree.

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Kind, Sink, TlsFiles};

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("cannot connect to {address}: {reason}")]
    Connect { address: String, reason: String },
    #[error("TLS with {address} failed: {reason}")]
    Tls { address: String, reason: String },
    #[error("the sink answered HTTP {0}")]
    Status(u16),
    #[error("the connection failed: {0}")]
    Io(String),
    #[error("the sink closed the connection")]
    Closed,
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("TLS setup: {0}")]
    Setup(String),
}

/// A TLS connector trusting `files.ca_pem` only (when given) and presenting the client
/// identity (when given). TLS 1.2 at least.
pub fn tls_connector(files: &TlsFiles) -> Result<tokio_native_tls::TlsConnector, SendError> {
    let mut builder = native_tls::TlsConnector::builder();
    builder.min_protocol_version(Some(native_tls::Protocol::Tlsv12));
    if let Some(pem) = &files.ca_pem {
        let ca = native_tls::Certificate::from_pem(pem)
            .map_err(|e| SendError::Setup(format!("ca_file is not a PEM certificate: {e}")))?;
        builder.add_root_certificate(ca);
        // A configured CA is the only one trusted: the sink is pinned to it.
        builder.disable_built_in_roots(true);
    }
    if let Some((cert, key)) = &files.identity {
        let identity = native_tls::Identity::from_pkcs8(cert, key).map_err(|e| {
            SendError::Setup(format!(
                "client_cert/client_key are not a PEM certificate and its PKCS#8 PEM key: {e}"
            ))
        })?;
        builder.identity(identity);
    }
    builder
        .build()
        .map(tokio_native_tls::TlsConnector::from)
        .map_err(|e| SendError::Setup(e.to_string()))
}

/// A byte stream to a sink, plain or TLS.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

async fn connect(sink: &Sink) -> Result<Box<dyn Stream>, SendError> {
    let tcp = tokio::time::timeout(sink.timeout, TcpStream::connect(&sink.address))
        .await
        .map_err(|_| SendError::Timeout(sink.timeout))?
        .map_err(|e| SendError::Connect {
            address: sink.address.clone(),
            reason: e.to_string(),
        })?;
    let _ = tcp.set_nodelay(true);
    let Some(files) = &sink.tls else {
        return Ok(Box::new(tcp));
    };
    let connector = tls_connector(files)?;
    let tls = tokio::time::timeout(sink.timeout, connector.connect(&files.server_name, tcp))
        .await
        .map_err(|_| SendError::Timeout(sink.timeout))?
        .map_err(|e| SendError::Tls {
            address: sink.address.clone(),
            reason: e.to_string(),
        })?;
    Ok(Box::new(tls))
}

/// How long a syslog connection must stay open after a batch was written for the batch to
/// count as received. Syslog has no acknowledgement: a sink that dies right after reading
/// resets the connection within a round trip, which this wait notices, and the batch is sent
/// again.
pub const STREAM_CONFIRM: Duration = Duration::from_millis(25);

/// An open connection to one sink; reconnects after a failure.
pub struct Connection {
    sink: Sink,
    http: Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
    stream: Option<Box<dyn Stream>>,
}

impl Connection {
    pub fn new(sink: Sink) -> Self {
        Self {
            sink,
            http: None,
            stream: None,
        }
    }

    /// Sends `batch` (already framed for this sink's kind) and returns once the sink
    /// acknowledged it. On error the connection is dropped; the next call reconnects.
    pub async fn send(&mut self, batch: Vec<u8>) -> Result<(), SendError> {
        let timeout = self.sink.timeout;
        let sent = match self.sink.kind {
            Kind::Http => tokio::time::timeout(timeout, self.post(batch)).await,
            Kind::SyslogTcp | Kind::SyslogTls => {
                tokio::time::timeout(timeout + STREAM_CONFIRM, self.write(batch)).await
            }
        };
        let outcome = sent.unwrap_or(Err(SendError::Timeout(timeout)));
        if outcome.is_err() {
            self.http = None;
            self.stream = None;
        }
        outcome
    }

    async fn post(&mut self, batch: Vec<u8>) -> Result<(), SendError> {
        let sender = match self.http.take() {
            Some(sender) if !sender.is_closed() => sender,
            _ => {
                let io = hyper_util::rt::TokioIo::new(connect(&self.sink).await?);
                let (sender, connection) = hyper::client::conn::http1::handshake(io)
                    .await
                    .map_err(|e| SendError::Io(e.to_string()))?;
                tokio::spawn(async move {
                    let _ = connection.await;
                });
                sender
            }
        };
        let mut sender = sender;
        sender
            .ready()
            .await
            .map_err(|e| SendError::Io(e.to_string()))?;
        let mut request = hyper::Request::post(&self.sink.path)
            .header(hyper::header::HOST, &self.sink.host_header)
            .header(hyper::header::CONTENT_TYPE, "application/x-ndjson")
            .header(hyper::header::USER_AGENT, "seedvault");
        if let Some((name, value)) = &self.sink.header {
            request = request.header(name.as_str(), value.as_str());
        }
        let request = request
            .body(Full::new(Bytes::from(batch)))
            .map_err(|e| SendError::Io(e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| SendError::Io(e.to_string()))?;
        let status = response.status();
        // Read the answer to its end, so that the connection can carry the next batch.
        let _ = response.into_body().collect().await;
        if !status.is_success() {
            return Err(SendError::Status(status.as_u16()));
        }
        self.http = Some(sender);
        Ok(())
    }

    async fn write(&mut self, batch: Vec<u8>) -> Result<(), SendError> {
        let mut stream = match self.stream.take() {
            Some(stream) => stream,
            None => connect(&self.sink).await?,
        };
        let io = |e: std::io::Error| SendError::Io(e.to_string());
        stream.write_all(&batch).await.map_err(io)?;
        stream.flush().await.map_err(io)?;
        // The sink never writes to us: readable means closed (EOF) or reset.
        let mut buffer = [0u8; 512];
        match tokio::time::timeout(STREAM_CONFIRM, stream.read(&mut buffer)).await {
            Err(_) => {}
            Ok(Ok(0)) => return Err(SendError::Closed),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(io(e)),
        }
        self.stream = Some(stream);
        Ok(())
    }
}

/// The syslog PRI of an event: facility authpriv (10, RFC 5424 §6.2.1), severity
/// informational, or notice for refusals and failures.
fn priority(outcome: &str) -> u8 {
    10 * 8 + if outcome == "success" { 6 } else { 5 }
}

/// What goes into the syslog header besides the event.
#[derive(Debug, Clone)]
pub struct SyslogHeader {
    pub hostname: String,
    pub procid: String,
}

impl SyslogHeader {
    /// This machine's host name (RFC 5424's HOSTNAME, `-` when unknown) and process id.
    pub fn local() -> Self {
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .ok()
            .filter(|h| valid_header_field(h, 255))
            .unwrap_or_else(|| "-".into());
        Self {
            hostname,
            procid: std::process::id().to_string(),
        }
    }
}

/// RFC 5424 header fields are 1..=max printable US-ASCII characters.
fn valid_header_field(text: &str, max: usize) -> bool {
    !text.is_empty() && text.len() <= max && text.bytes().all(|b| (33..=126).contains(&b))
}

/// Appends one event as an octet-counted RFC 5424 message: `LEN SP <PRI>1 TIMESTAMP HOSTNAME
/// seedvault PROCID MSGID - MSG`, MSGID the action and MSG the event's JSON object (the export's
/// line without its newline). `line` is what [`crate::audit::export::write_jsonl`] wrote.
pub fn frame_syslog(
    header: &SyslogHeader,
    time: &str,
    action: &str,
    outcome: &str,
    line: &[u8],
    out: &mut Vec<u8>,
) {
    let json = line.strip_suffix(b"\n").unwrap_or(line);
    let msgid = if valid_header_field(action, 32) {
        action
    } else {
        "-"
    };
    let time = if valid_header_field(time, 64) {
        time
    } else {
        "-"
    };
    let head = format!(
        "<{}>1 {time} {} seedvault {} {msgid} - ",
        priority(outcome),
        header.hostname,
        header.procid
    );
    out.extend_from_slice((head.len() + json.len()).to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(json);
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn a_syslog_frame_counts_its_octets_and_carries_the_export_line_as_its_message() {
        let header = SyslogHeader {
            hostname: "vault1".into(),
            procid: "42".into(),
        };
        let mut out = Vec::new();
        let line = b"{\"type\":\"event\",\"seq\":7}\n";
        frame_syslog(
            &header,
            "2026-12-01T10:00:00.000Z",
            "reveal.denied",
            "denied",
            line,
            &mut out,
        );
        let text = String::from_utf8(out).unwrap();
        let (len, message) = text.split_once(' ').unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), message.len());
        assert_eq!(
            message,
            "<85>1 2026-12-01T10:00:00.000Z vault1 seedvault 42 reveal.denied - {\"type\":\"event\",\"seq\":7}"
        );
    }
}
