//! Where a database's raw blocks spend their bytes: per series, the compressed size of its
//! column summed over every block. `cargo run --release -p vitals-store --example blockstat
//! -- PATH/vitals.db`. Reads only.

use std::collections::BTreeMap;

use vitals_store::codec::Reader;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .ok_or("usage: blockstat PATH/vitals.db")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{path}?mode=ro")).await?;
        let blocks: Vec<Vec<u8>> = sqlx::query_scalar("SELECT data FROM sample_blocks")
            .fetch_all(&pool)
            .await?;
        let mut per: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        let (mut ts_bytes, mut rows, mut total) = (0usize, 0usize, 0usize);
        for b in &blocks {
            total += b.len();
            let mut r = Reader::new(b);
            r.byte()?;
            rows += r.varint()? as usize;
            ts_bytes += r.take()?.len();
            let k = r.count()?;
            for _ in 0..k {
                let name = r.text()?.to_string();
                let flags = r.byte()?;
                let mut n = 0;
                if flags & 1 != 0 {
                    n += r.take()?.len();
                }
                let kind = r.byte()?;
                n += r.take()?.len() + 1;
                let e = per
                    .entry(format!(
                        "{name} ({})",
                        if kind == 1 { "int" } else { "f64" }
                    ))
                    .or_default();
                e.0 += n;
                e.1 += 1;
            }
        }
        println!(
            "{} blocks, {rows} rows, {total} bytes, timestamps {ts_bytes}",
            blocks.len()
        );
        let mut v: Vec<_> = per.into_iter().collect();
        v.sort_by_key(|(_, (n, _))| std::cmp::Reverse(*n));
        for (name, (n, _)) in v {
            println!("{:>10} {:>6.2} B/value  {name}", n, n as f64 / rows as f64);
        }
        let blocks: Vec<Vec<u8>> = sqlx::query_scalar("SELECT data FROM rollup_blocks")
            .fetch_all(&pool)
            .await?;
        let cols = [
            "per_series",
            "bucket",
            "count",
            "last_ts",
            "zero",
            "npos",
            "nneg",
            "min",
            "max",
            "sum",
            "last",
            "pos_i",
            "pos_c",
            "neg_i",
            "neg_c",
        ];
        let mut sizes = [0usize; 15];
        let (mut total, mut names) = (0usize, 0usize);
        for b in &blocks {
            total += b.len();
            let mut r = Reader::new(b);
            r.byte()?;
            let n = r.count()?;
            for _ in 0..n {
                names += r.take()?.len();
            }
            for s in &mut sizes {
                *s += r.take()?.len();
            }
        }
        println!(
            "\n{} minute blocks, {total} bytes, names {names}",
            blocks.len()
        );
        for (c, s) in cols.iter().zip(sizes) {
            println!("{s:>10} {c}");
        }
        let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as("SELECT tier, data FROM rollups")
            .fetch_all(&pool)
            .await?;
        for tier in [60_000, 3_600_000] {
            let (n, b) = rows
                .iter()
                .filter(|r| r.0 == tier)
                .fold((0, 0), |a, r| (a.0 + 1, a.1 + r.1.len()));
            println!("tier {tier}: {n} rows, {b} bytes");
        }
        Ok(())
    })
}
