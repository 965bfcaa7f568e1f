//! `vitals-hub export` and `vitals-hub import`: a device's raw samples as JSON Lines or CSV.
//!
//! - JSON Lines: one sample per line in the agent's format, rebuilt from the stored series with
//!   [`vitals_proto::series::unflatten`]. Every number round-trips exactly; what the store
//!   keeps as series only (it stores numbers, not labels) comes back empty or generic: GPU
//!   names (`gpu0`, ...), container images, and container states other than running.
//! - CSV has one row per sample and one column per series, in name order (`ts` in Unix
//!   milliseconds, then `cpu`, `cpu.core[0]`, ..., `mem.used`, ...), for spreadsheets and
//!   scripts. Importing it rebuilds the samples the same way.
//!
//! Import validates every sample as ingest does and stores in batches through the same
//! idempotent insert: a sample already stored (same device and time) is skipped, so running an
//! import twice changes nothing, and an import stopped half-way can simply be run again. A bad
//! line stops the import with its line number; the lines before it are kept.

use std::collections::BTreeSet;
use std::io::{BufRead, Write};

use indicatif::ProgressBar;
use vitals_proto::MetricSample;
use vitals_proto::validate::{Window, validate_sample};
use vitals_store::{Device, Frame, SampleBatch, Store};

/// File formats of export and import.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Jsonl,
}

#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("database: {0}")]
    Store(#[from] vitals_store::StoreError),
    #[error("file: {0}")]
    Io(#[from] std::io::Error),
    #[error(
        "line {line}: {message} (the lines before it are stored; fix it and run the import again, stored samples are skipped)"
    )]
    Line { line: u64, message: String },
}

/// Samples read from the database per query.
const PAGE: i64 = 2_000;
/// Longest line accepted on import (the agent protocol's message limit).
const MAX_LINE_BYTES: usize = vitals_proto::limits::MAX_MESSAGE_BYTES;
/// Samples stored per transaction on import.
const IMPORT_BATCH: usize = 500;

/// What an import did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ImportReport {
    /// Samples read from the file.
    pub read: u64,
    /// Samples newly stored (the rest were stored already).
    pub stored: u64,
    /// CSV cells of series this version does not know (ignored).
    pub unknown_series: u64,
}

/// Calls `f` with every page of `device`'s stored samples in `from..=to`, oldest first,
/// [`PAGE`] samples per query.
async fn each_page(
    store: &dyn Store,
    device: &Device,
    from: i64,
    to: i64,
    mut f: impl FnMut(&Frame) -> Result<(), TransferError>,
) -> Result<(), TransferError> {
    let mut at = from;
    loop {
        let page = store.samples_page(device.seq, at, to, PAGE).await?;
        f(&page)?;
        match page.ts.last() {
            Some(last) if page.len() as i64 == PAGE && *last < to => at = last + 1,
            _ => return Ok(()),
        }
    }
}

/// Writes `device`'s samples in `from..=to` to `out`; returns how many.
pub async fn export(
    store: &dyn Store,
    device: &Device,
    from: i64,
    to: i64,
    format: Format,
    out: &mut dyn Write,
    progress: &ProgressBar,
) -> Result<u64, TransferError> {
    let total = store.count_samples_between(device.seq, from, to).await?;
    progress.set_length(u64::try_from(total).unwrap_or(0));
    let mut written = 0u64;
    match format {
        Format::Jsonl => {
            each_page(store, device, from, to, |page| {
                for i in 0..page.len() {
                    serde_json::to_writer(&mut *out, &page.sample(i, &device.host_id))
                        .map_err(|e| std::io::Error::other(e.to_string()))?;
                    out.write_all(b"\n")?;
                    written += 1;
                    progress.inc(1);
                }
                Ok(())
            })
            .await?;
        }
        Format::Csv => {
            // First pass: the columns.
            let mut names: BTreeSet<String> = BTreeSet::new();
            each_page(store, device, from, to, |page| {
                for (n, col) in &page.series {
                    if !names.contains(n) && col.iter().any(|v| !v.is_nan()) {
                        names.insert(n.clone());
                    }
                }
                Ok(())
            })
            .await?;
            let mut header = String::from("ts");
            for n in &names {
                header.push(',');
                header.push_str(&csv_field(n));
            }
            writeln!(out, "{header}")?;
            each_page(store, device, from, to, |page| {
                let cols: Vec<Option<&Vec<f64>>> =
                    names.iter().map(|n| page.series.get(n)).collect();
                for i in 0..page.len() {
                    let mut line = page.ts[i].to_string();
                    for c in &cols {
                        line.push(',');
                        if let Some(v) = c.and_then(|c| c.get(i)).filter(|v| !v.is_nan()) {
                            line.push_str(&v.to_string());
                        }
                    }
                    writeln!(out, "{line}")?;
                    written += 1;
                    progress.inc(1);
                }
                Ok(())
            })
            .await?;
        }
    }
    out.flush()?;
    Ok(written)
}

/// Reads samples from `input` and stores them for `device`. `window` is the acceptable time
/// range (now and raw retention), as for ingest.
pub async fn import(
    store: &dyn Store,
    device: &Device,
    format: Format,
    input: &mut dyn BufRead,
    window: Window,
    progress: &ProgressBar,
) -> Result<ImportReport, TransferError> {
    let mut job = Import {
        store,
        device,
        report: ImportReport::default(),
        pending: Vec::with_capacity(IMPORT_BATCH),
    };
    let result = job.read(format, input, window, progress).await;
    // The good lines before a bad one are stored too, as the error message promises.
    job.flush().await?;
    result.map(|()| job.report)
}

/// An import in progress: where to, what it did, and the samples not stored yet.
struct Import<'a> {
    store: &'a dyn Store,
    device: &'a Device,
    report: ImportReport,
    pending: Vec<MetricSample>,
}

impl Import<'_> {
    async fn flush(&mut self) -> Result<(), TransferError> {
        self.report.stored += store_batch(self.store, self.device, &mut self.pending).await?;
        Ok(())
    }

    async fn read(
        &mut self,
        format: Format,
        input: &mut dyn BufRead,
        window: Window,
        progress: &ProgressBar,
    ) -> Result<(), TransferError> {
        let device = self.device;
        let mut columns: Option<Vec<String>> = None;
        let mut line_no = 0u64;
        let mut line = String::new();
        loop {
            line.clear();
            // A line is at most one message of the agent protocol; a longer one is refused
            // without reading the rest of it into memory.
            let n =
                std::io::Read::take(&mut *input, MAX_LINE_BYTES as u64 + 1).read_line(&mut line)?;
            if n == 0 {
                break;
            }
            progress.inc(n as u64);
            line_no += 1;
            if n > MAX_LINE_BYTES {
                return Err(TransferError::Line {
                    line: line_no,
                    message: format!("longer than {MAX_LINE_BYTES} bytes; is this an export?"),
                });
            }
            let text = line.trim_end_matches(['\r', '\n']);
            if text.trim().is_empty() {
                continue;
            }
            let bad = |message: String| TransferError::Line {
                line: line_no,
                message,
            };
            let sample = match format {
                Format::Jsonl => serde_json::from_str::<MetricSample>(text)
                    .map_err(|e| bad(format!("not a sample: {e}")))?,
                Format::Csv => {
                    let fields = csv_split(text).map_err(bad)?;
                    let Some(cols) = &columns else {
                        if fields.first().map(String::as_str) != Some("ts") {
                            return Err(bad(
                                "the first line must be the header, starting with `ts`".into(),
                            ));
                        }
                        columns = Some(fields);
                        continue;
                    };
                    if fields.len() != cols.len() {
                        return Err(bad(format!(
                            "{} fields where the header has {}",
                            fields.len(),
                            cols.len()
                        )));
                    }
                    let ts: i64 = fields[0]
                        .parse()
                        .map_err(|_| bad(format!("ts {:?} is not Unix milliseconds", fields[0])))?;
                    let mut values = Vec::with_capacity(cols.len());
                    for (name, cell) in cols.iter().zip(&fields).skip(1) {
                        if cell.is_empty() {
                            continue;
                        }
                        let v: f64 = cell
                            .parse()
                            .map_err(|_| bad(format!("{name} = {cell:?} is not a number")))?;
                        values.push((name.clone(), v));
                    }
                    let (s, unknown) =
                        vitals_proto::series::unflatten(ts, &device.host_id, &values);
                    self.report.unknown_series += unknown as u64;
                    s
                }
            };
            if !device.host_id.is_empty() && sample.host_id != device.host_id {
                return Err(bad(format!(
                    "hostId {:?} is not this device's host id {:?}",
                    sample.host_id, device.host_id
                )));
            }
            validate_sample(&sample, window).map_err(|e| bad(e.message))?;
            self.report.read += 1;
            self.pending.push(sample);
            if self.pending.len() >= IMPORT_BATCH {
                self.flush().await?;
            }
        }
        Ok(())
    }
}

async fn store_batch(
    store: &dyn Store,
    device: &Device,
    pending: &mut Vec<MetricSample>,
) -> Result<u64, TransferError> {
    if pending.is_empty() {
        return Ok(0);
    }
    let rows = crate::ingest::rows_of(pending);
    // `now` only moves last_seen forward: the newest imported sample, never the clock.
    let newest = pending.iter().map(|s| s.ts).max().unwrap_or(0);
    pending.clear();
    let stored = store
        .insert_batches(&[SampleBatch {
            device_seq: device.seq,
            samples: rows,
            now: newest,
        }])
        .await?;
    Ok(stored.iter().sum())
}

/// A CSV field, quoted when it holds a comma, quote or line break.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Splits one CSV line (RFC 4180 quoting, no line breaks inside fields).
fn csv_split(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    let mut at_start = true;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (false, '"') if at_start => quoted = true,
            (true, '"') => {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    cur.push('"');
                } else {
                    quoted = false;
                }
            }
            (false, ',') => {
                out.push(std::mem::take(&mut cur));
                at_start = true;
                continue;
            }
            (_, c) => cur.push(c),
        }
        at_start = false;
    }
    if quoted {
        return Err("a quoted field is not closed".into());
    }
    out.push(cur);
    Ok(out)
}

/// Parses a time argument: RFC 3339, Unix milliseconds, or a duration ago (`90s`, `15m`,
/// `12h`, `7d`).
pub fn parse_time(s: &str, now: i64) -> Result<i64, String> {
    if let Some(ms) = vitals_proto::sample::parse_rfc3339_ms(s) {
        return Ok(ms);
    }
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    // The unit is the last character; split on a character boundary (arguments are user text).
    let cut = s.char_indices().last().map_or(0, |(i, _)| i);
    let (num, unit) = s.split_at(cut);
    let mult = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => 0,
    };
    match num.parse::<i64>() {
        Ok(n) if mult > 0 && n >= 0 => Ok(now - n.saturating_mul(mult)),
        _ => Err(format!(
            "{s:?} is not a time: use RFC 3339 (2026-11-22T08:00:00Z), Unix milliseconds, or a duration ago (90s, 15m, 12h, 7d)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quoting_round_trips() {
        for s in ["plain", "disk[/a,b].used", "say \"hi\"", ""] {
            let line = format!("ts,{},x", csv_field(s));
            assert_eq!(
                csv_split(&line).ok(),
                Some(vec!["ts".into(), s.to_string(), "x".into()])
            );
        }
        assert!(csv_split("\"open").is_err());
    }

    #[test]
    fn times_parse_in_three_forms() {
        let now = 1_000_000_000_000;
        assert_eq!(parse_time("1700000000000", now), Ok(1_700_000_000_000));
        assert_eq!(
            parse_time("2023-11-14T22:13:20Z", now),
            Ok(1_700_000_000_000)
        );
        assert_eq!(parse_time("7d", now), Ok(now - 7 * 86_400_000));
        assert_eq!(parse_time("90s", now), Ok(now - 90_000));
        assert!(parse_time("yesterday", now).is_err());
        assert!(parse_time("-5m", now).is_err());
        assert!(parse_time("7é", now).is_err());
        assert!(parse_time("", now).is_err());
    }
}
