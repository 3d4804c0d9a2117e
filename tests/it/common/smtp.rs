//! A real SMTP listener on loopback, written here so a test can make it refuse the sender,
//! stall or drop the connection mid-message on cue (a packaged server cannot). It speaks just
//! enough of RFC 5321 for lettre: greeting, EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use seedvault::config::Overrides;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// How the listener answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Takes every message.
    Accept,
    /// `550` to `MAIL FROM`: the sender is refused for good.
    RefuseSender,
    /// Closes the connection half-way through the message's data.
    DropMidMessage,
    /// Accepts the connection and never says a word.
    Stall,
}

/// One message as it arrived.
#[derive(Debug, Clone)]
pub struct Mail {
    pub from: String,
    pub to: Vec<String>,
    pub data: String,
}

impl Mail {
    /// The message as a person reads it: quoted-printable soft line breaks joined.
    pub fn text(&self) -> String {
        self.data.replace("=\r\n", "").replace("=3D", "=")
    }
}

pub struct SmtpServer {
    pub port: u16,
    mode: Arc<Mutex<Mode>>,
    mails: Arc<Mutex<Vec<Mail>>>,
    task: tokio::task::JoinHandle<()>,
}

impl SmtpServer {
    pub async fn start(mode: Mode) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mode = Arc::new(Mutex::new(mode));
        let mails = Arc::new(Mutex::new(Vec::new()));
        let (m, mm) = (mode.clone(), mails.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let current = *m.lock().unwrap();
                tokio::spawn(session(stream, current, mm.clone()));
            }
        });
        Self {
            port,
            mode,
            mails,
            task,
        }
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    pub fn mails(&self) -> Vec<Mail> {
        self.mails.lock().unwrap().clone()
    }

    /// Waits (up to 20 s) until at least `n` messages arrived.
    pub async fn wait_for(&self, n: usize) -> Vec<Mail> {
        for _ in 0..200 {
            let mails = self.mails();
            if mails.len() >= n {
                return mails;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("expected {n} messages, got {:?}", self.mails());
    }

    /// The settings of a vault that sends its notices here (plain SMTP: loopback).
    pub fn settings(&self) -> Overrides {
        Overrides {
            smtp_host: Some("127.0.0.1".into()),
            smtp_port: Some(u32::from(self.port)),
            smtp_security: Some("none".into()),
            smtp_from: Some("seedvault <vault@example.org>".into()),
            smtp_security_contact: Some("+1 555 0100".into()),
            ..Default::default()
        }
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn session(stream: tokio::net::TcpStream, mode: Mode, mails: Arc<Mutex<Vec<Mail>>>) {
    if mode == Mode::Stall {
        tokio::time::sleep(Duration::from_secs(600)).await;
        return;
    }
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    if write
        .write_all(b"220 test.invalid ESMTP\r\n")
        .await
        .is_err()
    {
        return;
    }
    let mut from = String::new();
    let mut to = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let command = line.trim_end().to_owned();
        let upper = command.to_ascii_uppercase();
        let reply: &[u8] = if upper.starts_with("EHLO") {
            b"250-test.invalid\r\n250 8BITMIME\r\n"
        } else if upper.starts_with("HELO")
            || upper.starts_with("RSET")
            || upper.starts_with("NOOP")
        {
            b"250 OK\r\n"
        } else if upper.starts_with("MAIL FROM:") {
            if mode == Mode::RefuseSender {
                b"550 5.7.1 sender refused\r\n"
            } else {
                from = command[10..].trim().to_owned();
                to.clear();
                b"250 OK\r\n"
            }
        } else if upper.starts_with("RCPT TO:") {
            to.push(command[8..].trim().trim_matches(['<', '>']).to_owned());
            b"250 OK\r\n"
        } else if upper == "DATA" {
            if write.write_all(b"354 go ahead\r\n").await.is_err() {
                return;
            }
            let mut data = String::new();
            loop {
                line.clear();
                if lines.read_line(&mut line).await.unwrap_or(0) == 0 {
                    return;
                }
                if mode == Mode::DropMidMessage {
                    // Half a message, then the connection is gone.
                    return;
                }
                if line == ".\r\n" || line == ".\n" {
                    break;
                }
                data.push_str(
                    line.strip_prefix('.')
                        .filter(|_| line.starts_with(".."))
                        .unwrap_or(&line),
                );
            }
            mails.lock().unwrap().push(Mail {
                from: from.clone(),
                to: to.clone(),
                data,
            });
            b"250 queued\r\n"
        } else if upper == "QUIT" {
            let _ = write.write_all(b"221 bye\r\n").await;
            return;
        } else {
            b"502 not implemented\r\n"
        };
        if write.write_all(reply).await.is_err() {
            return;
        }
    }
}
