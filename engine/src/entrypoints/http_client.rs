//! A small blocking HTTP/1.1 client over `std::net`, for `lab bench-serve` and the server's
//! tests: one request per connection, JSON bodies, and server-sent events read as they come
//! (so a test can stop reading mid-stream and close the connection, as a client that goes away).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A whole response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

impl HttpResponse {
    /// The body as JSON (`Null` if it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// `host:port` of `http://host:port[/...]` (or of `host:port`).
pub fn host_port(url: &str) -> std::io::Result<String> {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    if url.starts_with("https://") {
        return Err(std::io::Error::other("https is not supported; use http://"));
    }
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() {
        return Err(std::io::Error::other(format!("no host in {url:?}")));
    }
    Ok(host.to_string())
}

/// A client of one server.
#[derive(Debug, Clone)]
pub struct HttpClient {
    addr: String,
    /// How long a read may wait before the request fails (a server that hangs fails the test
    /// instead of hanging it).
    pub timeout: Duration,
}

impl HttpClient {
    /// A client of `http://host:port` (a trailing path is ignored).
    pub fn new(url: &str) -> std::io::Result<Self> {
        Ok(HttpClient {
            addr: host_port(url)?,
            timeout: Duration::from_secs(120),
        })
    }

    pub fn get(&self, path: &str) -> std::io::Result<HttpResponse> {
        self.request("GET", path, None)?.read_all()
    }

    /// POSTs `body` (sent as it is, with `Content-Type: application/json`).
    pub fn post(&self, path: &str, body: &str) -> std::io::Result<HttpResponse> {
        self.request("POST", path, Some(body))?.read_all()
    }

    /// POSTs `body` and returns the response's head, its body still to be read (as events).
    pub fn post_stream(&self, path: &str, body: &str) -> std::io::Result<Streaming> {
        self.request("POST", path, Some(body))
    }

    fn request(&self, method: &str, path: &str, body: Option<&str>) -> std::io::Result<Streaming> {
        let mut stream = TcpStream::connect(&self.addr)?;
        stream.set_read_timeout(Some(self.timeout))?;
        stream.set_nodelay(true)?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.addr
        );
        if let Some(body) = body {
            head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes())?;
        if let Some(body) = body {
            stream.write_all(body.as_bytes())?;
        }
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
        let mut content_type = String::new();
        let mut length = None;
        let mut chunked = false;
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                break;
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let Some((name, value)) = l.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match name.to_ascii_lowercase().as_str() {
                "content-type" => content_type = value.to_string(),
                "content-length" => length = value.parse().ok(),
                "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
                _ => {}
            }
        }
        let body = match (chunked, length) {
            (true, _) => Body::Chunked(0),
            (false, Some(n)) => Body::Length(n),
            (false, None) => Body::ToEof,
        };
        Ok(Streaming {
            status,
            content_type,
            reader,
            body,
            events: String::new(),
            done: false,
        })
    }
}

enum Body {
    /// Bytes left.
    Length(usize),
    /// Bytes left in the current chunk.
    Chunked(usize),
    ToEof,
    Finished,
}

/// A response whose body is read as it arrives. Dropping it closes the connection.
pub struct Streaming {
    pub status: u16,
    pub content_type: String,
    reader: BufReader<TcpStream>,
    body: Body,
    /// Decoded body text not yet split into events.
    events: String,
    done: bool,
}

impl Streaming {
    /// The next piece of the body (empty at its end).
    fn read_body(&mut self) -> std::io::Result<Vec<u8>> {
        let mut buf = vec![0u8; 8192];
        loop {
            match self.body {
                Body::Finished => return Ok(Vec::new()),
                Body::Length(0) => {
                    self.body = Body::Finished;
                    return Ok(Vec::new());
                }
                Body::Length(left) => {
                    let n = self.reader.read(&mut buf[..left.min(8192)])?;
                    if n == 0 {
                        return Err(std::io::Error::other("connection closed mid-body"));
                    }
                    self.body = Body::Length(left - n);
                    buf.truncate(n);
                    return Ok(buf);
                }
                Body::ToEof => {
                    let n = self.reader.read(&mut buf)?;
                    if n == 0 {
                        self.body = Body::Finished;
                    }
                    buf.truncate(n);
                    return Ok(buf);
                }
                Body::Chunked(0) => {
                    let mut line = String::new();
                    self.reader.read_line(&mut line)?;
                    if line.trim().is_empty() {
                        // The CRLF after a chunk's data; the size line follows.
                        line.clear();
                        self.reader.read_line(&mut line)?;
                    }
                    let size =
                        usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                            .map_err(|_| {
                                std::io::Error::other(format!("bad chunk size {line:?}"))
                            })?;
                    if size == 0 {
                        self.body = Body::Finished;
                        return Ok(Vec::new());
                    }
                    self.body = Body::Chunked(size);
                }
                Body::Chunked(left) => {
                    let n = self.reader.read(&mut buf[..left.min(8192)])?;
                    if n == 0 {
                        return Err(std::io::Error::other("connection closed mid-chunk"));
                    }
                    self.body = Body::Chunked(left - n);
                    buf.truncate(n);
                    return Ok(buf);
                }
            }
        }
    }

    /// Reads the rest of the body.
    pub fn read_all(mut self) -> std::io::Result<HttpResponse> {
        let mut bytes = Vec::new();
        loop {
            let piece = self.read_body()?;
            if piece.is_empty() {
                break;
            }
            bytes.extend(piece);
        }
        Ok(HttpResponse {
            status: self.status,
            content_type: self.content_type,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        })
    }

    /// The `data:` payload of the next server-sent event (`None` at the end of the body).
    pub fn next_event(&mut self) -> std::io::Result<Option<String>> {
        let mut pending = Vec::new();
        loop {
            if let Some(end) = self.events.find("\n\n") {
                let event: String = self.events.drain(..end + 2).collect();
                let data: Vec<&str> = event
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(|d| d.strip_prefix(' ').unwrap_or(d))
                    .collect();
                if data.is_empty() {
                    continue; // a comment or keep-alive
                }
                return Ok(Some(data.join("\n")));
            }
            if self.done {
                return Ok(None);
            }
            let piece = self.read_body()?;
            if piece.is_empty() {
                self.done = true;
            }
            // Events are UTF-8, but a read may end inside a character: keep the bytes until
            // they decode.
            pending.extend(piece);
            match std::str::from_utf8(&pending) {
                Ok(text) => {
                    self.events.push_str(text);
                    pending.clear();
                }
                Err(e) if e.error_len().is_none() && !self.done => {
                    let valid = e.valid_up_to();
                    let text = std::str::from_utf8(&pending[..valid]).unwrap_or_default();
                    self.events.push_str(text);
                    pending.drain(..valid);
                }
                Err(_) => {
                    return Err(std::io::Error::other("the event stream is not UTF-8"));
                }
            }
        }
    }
}
