//! [`Frame`]: raw samples of one device in column form (one timestamp column, one value
//! column per series), the shape every raw read returns, whether the samples came from hot
//! rows or from compressed blocks. A value is `NaN` where a sample lacks the series: stored
//! values are always finite (ingest validates them), so `NaN` is unambiguous.
//!
//! [`Row`] is the other direction: one sample to store, flattened into its series
//! ([`vitals_proto::series::flatten_into`]).

use std::collections::BTreeMap;
use std::sync::Arc;

/// One sample to store: its time, its series names joined by newlines (its *shape*, shared
/// by most samples of a device, so clones are cheap) and one value per name.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub ts: i64,
    pub names: Arc<str>,
    pub values: Vec<f64>,
}

impl Row {
    /// Flattens a validated sample.
    pub fn of(sample: &vitals_proto::MetricSample) -> Row {
        let mut names = String::new();
        let mut values = Vec::new();
        vitals_proto::series::flatten_into(sample, &mut names, &mut values);
        Row {
            ts: sample.ts,
            names: Arc::from(names),
            values,
        }
    }

    /// `(name, value)` pairs.
    pub fn series(&self) -> impl Iterator<Item = (&str, f64)> {
        self.names.split('\n').zip(self.values.iter().copied())
    }
}

/// Which series a read wants: all, or those named (exactly, or by a prefix ending in `*`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SeriesFilter(Option<Vec<String>>);

impl SeriesFilter {
    /// Every series.
    pub fn all() -> SeriesFilter {
        SeriesFilter(None)
    }

    /// Only these names or `prefix*` patterns.
    pub fn only(names: Vec<String>) -> SeriesFilter {
        SeriesFilter(Some(names))
    }

    pub fn wants(&self, name: &str) -> bool {
        match &self.0 {
            None => true,
            Some(names) => names.iter().any(|n| match n.strip_suffix('*') {
                Some(prefix) => name.starts_with(prefix),
                None => n == name,
            }),
        }
    }
}

/// Raw samples of one device, oldest first, in column form.
#[derive(Debug, Clone, Default)]
pub struct Frame {
    pub ts: Vec<i64>,
    /// Series name -> one value per timestamp (`NaN` where absent).
    pub series: BTreeMap<String, Vec<f64>>,
}

/// Equal when the times, the series and every value's bits are (so `NaN` equals `NaN`).
impl PartialEq for Frame {
    fn eq(&self, other: &Frame) -> bool {
        self.ts == other.ts
            && self.series.len() == other.series.len()
            && self
                .series
                .iter()
                .zip(&other.series)
                .all(|((a, x), (b, y))| {
                    a == b
                        && x.len() == y.len()
                        && x.iter().zip(y).all(|(u, v)| u.to_bits() == v.to_bits())
                })
    }
}

impl Frame {
    /// The frame of these rows (sorted by time).
    pub fn of_rows(rows: &[Row]) -> Frame {
        let mut f = Frame::default();
        for r in rows {
            let names: Vec<&str> = r.names.split('\n').collect();
            f.push_rows(&names, [(r.ts, r.values.as_slice())], &SeriesFilter::all());
        }
        f
    }

    pub fn len(&self) -> usize {
        self.ts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ts.is_empty()
    }

    /// Appends rows that share one set of series names (`names[j]` is the name of
    /// `values[j]` in every row), padding the other columns with `NaN`.
    pub fn push_rows<'a>(
        &mut self,
        names: &[&str],
        rows: impl IntoIterator<Item = (i64, &'a [f64])>,
        filter: &SeriesFilter,
    ) {
        let before = self.ts.len();
        let mut cols: Vec<Option<Vec<f64>>> = names
            .iter()
            .map(|n| {
                filter.wants(n).then(|| {
                    self.series
                        .remove(*n)
                        .unwrap_or_else(|| vec![f64::NAN; before])
                })
            })
            .collect();
        for (ts, values) in rows {
            self.ts.push(ts);
            for (j, col) in cols.iter_mut().enumerate() {
                if let Some(col) = col {
                    col.push(values.get(j).copied().unwrap_or(f64::NAN));
                }
            }
        }
        let len = self.ts.len();
        for (name, col) in names.iter().zip(cols) {
            if let Some(col) = col {
                self.series.insert((*name).to_string(), col);
            }
        }
        for col in self.series.values_mut() {
            col.resize(len, f64::NAN);
        }
    }

    /// Appends another frame's rows (their times need not follow this frame's: see
    /// [`Frame::sort`]).
    pub fn append(&mut self, other: Frame) {
        let before = self.ts.len();
        let added = other.ts.len();
        self.ts.extend(other.ts);
        for (name, col) in other.series {
            let mine = self
                .series
                .entry(name)
                .or_insert_with(|| vec![f64::NAN; before]);
            mine.extend(col);
        }
        for col in self.series.values_mut() {
            col.resize(before + added, f64::NAN);
        }
    }

    /// Sorts rows by time (stable), if they are not already.
    pub fn sort(&mut self) {
        if self.ts.windows(2).all(|w| w[0] <= w[1]) {
            return;
        }
        let mut order: Vec<usize> = (0..self.ts.len()).collect();
        order.sort_by_key(|i| self.ts[*i]);
        self.ts = order.iter().map(|i| self.ts[*i]).collect();
        for col in self.series.values_mut() {
            *col = order.iter().map(|i| col[*i]).collect();
        }
    }

    /// Keeps the rows with `from <= ts <= to`.
    pub fn retain_range(&mut self, from: i64, to: i64) {
        if self.ts.iter().all(|t| (from..=to).contains(t)) {
            return;
        }
        let keep: Vec<bool> = self.ts.iter().map(|t| (from..=to).contains(t)).collect();
        let pick = |v: &mut Vec<_>| {
            let mut k = keep.iter();
            v.retain(|_| *k.next().unwrap_or(&false));
        };
        pick(&mut self.ts);
        for col in self.series.values_mut() {
            let mut k = keep.iter();
            col.retain(|_| *k.next().unwrap_or(&false));
        }
    }

    /// Keeps the first `n` rows.
    pub fn truncate(&mut self, n: usize) {
        self.ts.truncate(n);
        for col in self.series.values_mut() {
            col.truncate(n);
        }
    }

    /// Computes the derived series `name` ([`vitals_proto::series::derivation`]) from this
    /// frame's other columns; `None` if it is not derived or its inputs are missing.
    pub fn derive(&self, name: &str) -> Option<Vec<f64>> {
        use vitals_proto::series::{Derivation, derivation, pct};
        let n = self.len();
        match derivation(name)? {
            Derivation::Pct { used, total } => {
                let (u, t) = (self.series.get(&used)?, self.series.get(&total)?);
                Some(
                    u.iter()
                        .zip(t)
                        .map(|(u, t)| {
                            if u.is_nan() || t.is_nan() {
                                f64::NAN
                            } else {
                                pct(*u, *t)
                            }
                        })
                        .collect(),
                )
            }
            Derivation::AllDisks => {
                let disks: Vec<(&Vec<f64>, &Vec<f64>)> = self
                    .series
                    .iter()
                    .filter_map(|(k, used)| {
                        let key = k.strip_prefix("disk[")?.strip_suffix("].used")?;
                        Some((used, self.series.get(&format!("disk[{key}].total"))?))
                    })
                    .collect();
                if disks.is_empty() {
                    return None;
                }
                Some(
                    (0..n)
                        .map(|i| {
                            let (mut u, mut t, mut any) = (0.0, 0.0, false);
                            for (used, total) in &disks {
                                if !used[i].is_nan() && !total[i].is_nan() {
                                    u += used[i];
                                    t += total[i];
                                    any = true;
                                }
                            }
                            if any { pct(u, t) } else { f64::NAN }
                        })
                        .collect(),
                )
            }
        }
    }

    /// Drops series that have no value in any row.
    pub fn drop_empty_series(&mut self) {
        self.series.retain(|_, col| col.iter().any(|v| !v.is_nan()));
    }

    /// The series of row `i` that it has, as `(name, value)` pairs in name order.
    pub fn row(&self, i: usize) -> impl Iterator<Item = (&str, f64)> {
        self.series.iter().filter_map(move |(n, col)| {
            col.get(i).filter(|v| !v.is_nan()).map(|v| (n.as_str(), *v))
        })
    }

    /// Every row as a [`Row`] to store again (a copy to another database): each keeps the
    /// series it has; consecutive rows of one shape share its names.
    pub fn rows(&self) -> Vec<Row> {
        let mut out: Vec<Row> = Vec::with_capacity(self.len());
        for i in 0..self.len() {
            let mut names = String::new();
            let mut values = Vec::new();
            for (n, v) in self.row(i) {
                if !names.is_empty() {
                    names.push('\n');
                }
                names.push_str(n);
                values.push(v);
            }
            let names = match out.last() {
                Some(prev) if *prev.names == *names => Arc::clone(&prev.names),
                _ => Arc::from(names),
            };
            out.push(Row {
                ts: self.ts[i],
                names,
                values,
            });
        }
        out
    }

    /// Row `i` rebuilt as a sample ([`vitals_proto::series::unflatten`]): what series cannot
    /// carry (GPU names, container images) comes back empty.
    pub fn sample(&self, i: usize, host_id: &str) -> vitals_proto::MetricSample {
        let values: Vec<(String, f64)> = self.row(i).map(|(n, v)| (n.to_string(), v)).collect();
        vitals_proto::series::unflatten(self.ts[i], host_id, &values).0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_of_different_shapes_align_and_sort() {
        let mut f = Frame::default();
        f.push_rows(
            &["a", "b"],
            [(3, &[1.0, 2.0][..]), (5, &[3.0, 4.0][..])],
            &SeriesFilter::all(),
        );
        f.push_rows(&["b", "c"], [(4, &[9.0, 8.0][..])], &SeriesFilter::all());
        f.sort();
        assert_eq!(f.ts, vec![3, 4, 5]);
        assert_eq!(f.series["b"], vec![2.0, 9.0, 4.0]);
        assert!(f.series["a"][1].is_nan());
        assert!(f.series["c"][0].is_nan() && f.series["c"][1] == 8.0);
        assert_eq!(f.row(1).collect::<Vec<_>>(), vec![("b", 9.0), ("c", 8.0)]);
        f.retain_range(4, 5);
        assert_eq!(f.ts, vec![4, 5]);
        assert_eq!(f.series["b"], vec![9.0, 4.0]);
        let mut only = Frame::default();
        only.push_rows(
            &["cpu", "cpu.user", "mem.used"],
            [(1, &[1.0, 2.0, 3.0][..])],
            &SeriesFilter::only(vec!["cpu*".into()]),
        );
        assert_eq!(
            only.series.keys().collect::<Vec<_>>(),
            vec!["cpu", "cpu.user"]
        );
    }
}
