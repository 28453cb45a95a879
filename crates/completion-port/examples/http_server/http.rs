//! The HTTP/1.1 this server speaks: request heads, paths, response heads.
//! Nothing here knows about the port.

use std::cell::RefCell;
use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The longest request head accepted (431 beyond).
pub const MAX_HEAD: usize = 8192;

/// A request's method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `GET`.
    Get,
    /// `HEAD`.
    Head,
    /// Any other (answered 405).
    Other,
}

/// A request head.
#[derive(Debug)]
pub struct Request<'a> {
    /// The method.
    pub method: Method,
    /// The request target, as sent (`/a%20b.txt?x=1`).
    pub target: &'a str,
    /// Whether the connection stays open after the response: HTTP/1.1
    /// unless `Connection: close`, HTTP/1.0 with `Connection:
    /// keep-alive`.
    pub keep_alive: bool,
    /// A body follows the head (`Content-Length` > 0, or
    /// `Transfer-Encoding`).
    pub has_body: bool,
}

/// What the start of a buffer holds.
#[derive(Debug)]
pub enum Parse<'a> {
    /// Not a whole head yet.
    Incomplete,
    /// Not HTTP/1.x (answered 400, then the connection closes).
    Bad,
    /// A head, and its length in bytes.
    Done(Request<'a>, usize),
}

/// The statuses this server answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// 200.
    Ok,
    /// 400.
    BadRequest,
    /// 403.
    Forbidden,
    /// 404.
    NotFound,
    /// 405.
    MethodNotAllowed,
    /// 431.
    HeaderTooLarge,
}

impl Status {
    /// The status line's code and reason.
    pub fn line(self) -> (u16, &'static str) {
        match self {
            Status::Ok => (200, "OK"),
            Status::BadRequest => (400, "Bad Request"),
            Status::Forbidden => (403, "Forbidden"),
            Status::NotFound => (404, "Not Found"),
            Status::MethodNotAllowed => (405, "Method Not Allowed"),
            Status::HeaderTooLarge => (431, "Request Header Fields Too Large"),
        }
    }
}

/// Parses the request head at the start of `buf`.
pub fn parse(buf: &[u8]) -> Parse<'_> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Parse::Incomplete;
    };
    let Ok(head) = std::str::from_utf8(&buf[..end]) else {
        return Parse::Bad;
    };
    let mut lines = head.split("\r\n");
    let mut words = lines.next().unwrap_or_default().split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return Parse::Bad;
    };
    let mut keep_alive = match version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        _ => return Parse::Bad,
    };
    let method = match method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        m if !m.is_empty() && m.bytes().all(|b| b.is_ascii_uppercase()) => Method::Other,
        _ => return Parse::Bad,
    };
    if target.is_empty() {
        return Parse::Bad;
    }
    let mut has_body = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Parse::Bad;
        };
        if name.is_empty() || name.bytes().any(|b| b.is_ascii_whitespace()) {
            return Parse::Bad; // includes obsolete line folding
        }
        let value = value.trim();
        if name.eq_ignore_ascii_case("connection") {
            for option in value.split(',').map(str::trim) {
                if option.eq_ignore_ascii_case("close") {
                    keep_alive = false;
                } else if option.eq_ignore_ascii_case("keep-alive") {
                    keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            match value.parse::<u64>() {
                Ok(n) => has_body |= n > 0,
                Err(_) => return Parse::Bad,
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            has_body = true;
        }
    }
    let request = Request {
        method,
        target,
        keep_alive,
        has_body,
    };
    Parse::Done(request, end + 4)
}

/// The file under `root` that `target` names: the query is ignored,
/// `%XX` decoded, a trailing `/` means `index.html`. A target that is
/// not a path, or whose path has a `..` segment or a NUL byte, is a
/// bad request: nothing outside `root` can be named.
pub fn resolve(root: &Path, target: &str) -> Result<PathBuf, Status> {
    let path = target.split(['?', '#']).next().unwrap_or_default();
    if !path.starts_with('/') {
        return Err(Status::BadRequest);
    }
    let decoded = percent_decode(path.as_bytes()).ok_or(Status::BadRequest)?;
    if decoded.contains(&0) {
        return Err(Status::BadRequest);
    }
    let mut file = root.to_path_buf();
    for segment in decoded.split(|&b| b == b'/') {
        match segment {
            b"" | b"." => {}
            b".." => return Err(Status::BadRequest),
            name => file.push(OsStr::from_bytes(name)),
        }
    }
    if decoded.ends_with(b"/") {
        file.push("index.html");
    }
    Ok(file)
}

fn percent_decode(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            let hex = std::str::from_utf8(s.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    Some(out)
}

/// The `Content-Type` of a file, by its extension.
pub fn content_type(path: &Path) -> &'static str {
    let ext = path.extension().and_then(OsStr::to_str).unwrap_or_default();
    match ext.to_ascii_lowercase().as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "txt" => "text/plain; charset=utf-8",
        "css" => "text/css",
        "js" => "text/javascript",
        "json" => "application/json",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "svg" => "image/svg+xml",
        _ => "application/octet-stream",
    }
}

/// Appends a response head to `out`.
pub fn write_head(out: &mut Vec<u8>, status: Status, len: u64, kind: &str, keep_alive: bool) {
    let (code, reason) = status.line();
    let connection = if keep_alive { "keep-alive" } else { "close" };
    let allow = if status == Status::MethodNotAllowed {
        "Allow: GET, HEAD\r\n"
    } else {
        ""
    };
    DATE.with(|d| {
        let mut d = d.borrow_mut();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |t| t.as_secs());
        if d.0 != now {
            *d = (now, http_date(now));
        }
        // Writing to a Vec cannot fail.
        let _ = write!(
            out,
            "HTTP/1.1 {code} {reason}\r\nServer: cport-http\r\nDate: {}\r\n\
             Content-Type: {kind}\r\nContent-Length: {len}\r\nConnection: {connection}\r\n{allow}\r\n",
            d.1
        );
    });
}

/// Appends an error response to `out`: its head and, unless
/// `head_only`, a one-line text body.
pub fn write_error(out: &mut Vec<u8>, status: Status, head_only: bool, keep_alive: bool) {
    let (code, reason) = status.line();
    let body = format!("{code} {reason}\n");
    write_head(
        out,
        status,
        body.len() as u64,
        "text/plain; charset=utf-8",
        keep_alive,
    );
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
}

std::thread_local! {
    /// The `Date` of the current second, formatted once per second.
    static DATE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// `secs` since the epoch as an HTTP date: `Sun, 06 Nov 1994 08:49:37 GMT`.
pub fn http_date(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize],
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}
