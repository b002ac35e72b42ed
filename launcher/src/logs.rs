//! `bottleneck logs NAME [-f] [--json]`: a bottle's audit stream (one JSON line per
//! gateway decision) as a table people can read: allowed and denied lines in different
//! colours on a terminal, each with its reason.
//!
//! Rendering is line by line with fixed column widths, so `-f` can print each line as it
//! arrives; unknown fields are ignored and missing ones left blank, so audit lines of
//! kinds this version does not know (DNS, proxy) still show.

use std::io::{BufRead, Read, Write};
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

/// The fields of an audit line the table shows (see the gateway's `audit::Record`).
#[derive(Debug, Default, Deserialize)]
pub struct AuditLine {
    /// RFC 3339 time.
    #[serde(default)]
    pub ts: String,
    /// tls, http, https, tcp, dns, proxy.
    #[serde(default)]
    pub kind: String,
    /// The SNI.
    pub sni: Option<String>,
    /// The host decided on.
    pub host: Option<String>,
    /// Where the agent connected to.
    pub original_dst: Option<String>,
    /// HTTP method.
    pub method: Option<String>,
    /// HTTP path (query elided by the gateway).
    pub path: Option<String>,
    /// DNS question type, when the line is a DNS decision.
    pub qtype: Option<String>,
    /// allow / deny.
    #[serde(default)]
    pub decision: String,
    /// The reason code.
    #[serde(default)]
    pub reason: String,
    /// HTTP status.
    pub status: Option<u16>,
    /// The vetted upstream.
    pub upstream: Option<String>,
}

/// Column widths: TIME KIND DECISION HOST REQUEST STATUS, then REASON.
const WIDTHS: [usize; 6] = [8, 5, 7, 32, 28, 6];
/// The longest line read from the audit file; longer lines are cut (the gateway's lines
/// are far shorter).
const MAX_LINE: usize = 64 << 10;

const GREEN: &str = "\x1b[32m";
const RED: &str = "\x1b[31m";
const BOLD: &str = "\x1b[1m";
const RESET: &str = "\x1b[0m";

fn fit(text: &str, width: usize) -> String {
    let count = text.chars().count();
    if count <= width {
        format!("{text:<width$}")
    } else {
        let cut: String = text.chars().take(width.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

fn row(cells: [&str; 7]) -> String {
    let mut out = String::new();
    for (cell, width) in cells.iter().zip(WIDTHS) {
        out.push_str(&fit(cell, width));
        out.push(' ');
    }
    out.push_str(cells[6]);
    out
}

/// The header line of the table.
pub fn header(color: bool) -> String {
    let text = row([
        "TIME", "KIND", "VERDICT", "HOST", "REQUEST", "STATUS", "REASON",
    ]);
    if color {
        format!("{BOLD}{text}{RESET}")
    } else {
        text
    }
}

/// One audit line as a table row; `None` for a line that is not an audit record.
pub fn render(line: &str, color: bool) -> Option<String> {
    let rec: AuditLine = serde_json::from_str(line.trim()).ok()?;
    // HH:MM:SS of `2026-11-23T13:01:02.123Z`.
    let time = rec
        .ts
        .split_once('T')
        .map(|(_, t)| t.chars().take(8).collect::<String>())
        .unwrap_or_default();
    let host = rec
        .host
        .clone()
        .or(rec.sni.clone())
        .or(rec.original_dst.clone())
        .unwrap_or_default();
    let request = match (&rec.method, &rec.path, &rec.qtype) {
        (Some(m), Some(p), _) => format!("{m} {p}"),
        (Some(m), None, _) => m.clone(),
        (None, _, Some(q)) => q.clone(),
        _ => rec
            .original_dst
            .clone()
            .filter(|d| Some(d) != rec.host.as_ref())
            .map(|d| format!("-> {d}"))
            .unwrap_or_default(),
    };
    let status = rec.status.map(|s| s.to_string()).unwrap_or_default();
    let verdict = match rec.decision.as_str() {
        "allow" => "allow",
        "deny" => "DENY",
        other => other,
    };
    let text = row([
        &time,
        &rec.kind,
        verdict,
        &host,
        &request,
        &status,
        &rec.reason,
    ]);
    Some(match (color, rec.decision.as_str()) {
        (true, "allow") => format!("{GREEN}{text}{RESET}"),
        (true, "deny") => format!("{RED}{text}{RESET}"),
        _ => text,
    })
}

/// Renders every line of `text` (a whole audit file) with the header; lines that are not
/// audit records are skipped.
pub fn render_all(text: &str, color: bool) -> String {
    let mut out = header(color);
    out.push('\n');
    for line in text.lines() {
        if let Some(row) = render(line, color) {
            out.push_str(&row);
            out.push('\n');
        }
    }
    out
}

/// Errors of `bottleneck logs`.
#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    /// No such bottle (or it has no audit log).
    #[error("no audit log for bottle {name} at {path} (see `bottleneck ls`)")]
    NotFound {
        /// The bottle.
        name: String,
        /// Where the log was looked for.
        path: String,
    },
    /// Reading or writing failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Prints the audit log at `path`; with `follow`, keeps printing new lines until
/// `keep_following` returns false (checked about every 200 ms).
pub fn show(
    name: &str,
    path: &Path,
    json: bool,
    follow: bool,
    color: bool,
    out: &mut dyn Write,
    keep_following: &dyn Fn() -> bool,
) -> Result<(), LogsError> {
    let file = std::fs::File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => LogsError::NotFound {
            name: name.to_owned(),
            path: path.display().to_string(),
        },
        _ => LogsError::Io(e),
    })?;
    let mut reader = std::io::BufReader::new(file);
    if !json {
        writeln!(out, "{}", header(color))?;
    }
    let mut buf: Vec<u8> = Vec::new();
    loop {
        buf.clear();
        // Bounded read of one line.
        let n = Read::by_ref(&mut reader)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut buf)?;
        if n == 0 || buf.last() != Some(&b'\n') {
            if !follow || !keep_following() {
                // A partial last line is shown as it is when not following.
                if n > 0 {
                    print_line(&buf, json, color, out)?;
                }
                return Ok(());
            }
            if n > 0 {
                // Half a line written: wait for the rest by re-reading it later.
                reader.seek_relative(-(n as i64))?;
            }
            out.flush()?;
            std::thread::sleep(Duration::from_millis(200));
            continue;
        }
        print_line(&buf, json, color, out)?;
    }
}

fn print_line(buf: &[u8], json: bool, color: bool, out: &mut dyn Write) -> std::io::Result<()> {
    let line = String::from_utf8_lossy(buf);
    let line = line.trim_end();
    if line.is_empty() {
        return Ok(());
    }
    if json {
        writeln!(out, "{line}")
    } else if let Some(row) = render(line, color) {
        writeln!(out, "{row}")
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALLOW: &str = r#"{"ts":"2026-11-23T13:01:02.345Z","kind":"https","client":"198.18.0.2:40000","sni":"allowed.test","host":"allowed.test","method":"GET","path":"/echo","decision":"allow","reason":"allowed","route":"allowed.test (line 4)","status":200,"bytes_up":0,"bytes_down":120,"duration_ms":3,"upstream":"198.51.100.10:443"}"#;
    const DENY: &str = r#"{"ts":"2026-11-23T13:01:03.000Z","kind":"tls","sni":"denied.test","host":"denied.test","decision":"deny","reason":"no_route","bytes_up":0,"bytes_down":0,"duration_ms":0}"#;
    const TCP: &str = r#"{"ts":"2026-11-23T13:01:04.000Z","kind":"tcp","original_dst":"198.51.100.7:7","decision":"deny","reason":"port_not_allowed","bytes_up":0,"bytes_down":0,"duration_ms":0}"#;

    #[test]
    fn rows_show_time_kind_verdict_host_request_status_reason() {
        let row = render(ALLOW, false).unwrap();
        assert!(
            row.starts_with("13:01:02 https allow   allowed.test"),
            "{row}"
        );
        assert!(row.contains("GET /echo"), "{row}");
        assert!(row.contains(" 200 "), "{row}");
        assert!(row.ends_with("allowed"), "{row}");
        let row = render(DENY, false).unwrap();
        assert!(row.contains("DENY    denied.test"), "{row}");
        assert!(row.ends_with("no_route"), "{row}");
        let row = render(TCP, false).unwrap();
        assert!(row.contains("198.51.100.7:7"), "{row}");
        assert!(row.ends_with("port_not_allowed"), "{row}");
    }

    #[test]
    fn columns_line_up_with_the_header() {
        let header = header(false);
        let row = render(ALLOW, false).unwrap();
        let col = |s: &str, word: &str| s.find(word).unwrap();
        assert_eq!(col(&header, "HOST"), col(&row, "allowed.test"));
        assert_eq!(col(&header, "REASON"), row.rfind("allowed").unwrap());
    }

    #[test]
    fn colours_only_when_asked_and_by_verdict() {
        assert!(!render(ALLOW, false).unwrap().contains('\x1b'));
        assert!(render(ALLOW, true).unwrap().starts_with(GREEN));
        assert!(render(DENY, true).unwrap().starts_with(RED));
        assert!(header(true).starts_with(BOLD));
    }

    #[test]
    fn long_fields_are_cut_and_garbage_is_skipped() {
        let long = DENY.replace("denied.test", &"x".repeat(80));
        let row = render(&long, false).unwrap();
        assert!(row.contains("xxx…"), "{row}");
        assert!(render("not json", false).is_none());
        let all = render_all(&format!("{ALLOW}\ngarbage\n{DENY}\n"), false);
        assert_eq!(all.lines().count(), 3, "{all}");
    }

    #[test]
    fn show_prints_a_file_as_a_table_or_json() {
        let dir = std::env::temp_dir().join(format!("bn-logs-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit.jsonl");
        std::fs::write(&path, format!("{ALLOW}\n{DENY}\n")).unwrap();
        let mut out = Vec::new();
        show("b", &path, false, false, false, &mut out, &|| false).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 3);
        let mut out = Vec::new();
        show("b", &path, true, false, false, &mut out, &|| false).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!("{ALLOW}\n{DENY}\n")
        );
        let missing = show(
            "b",
            &dir.join("nope"),
            false,
            false,
            false,
            &mut Vec::new(),
            &|| false,
        );
        assert!(matches!(missing, Err(LogsError::NotFound { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
