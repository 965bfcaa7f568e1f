//! The app store of seed 001: buckets of schema-checked records (`metrics`, `alerts`) that
//! admins write and everyone can subscribe to.
//!
//! The source of truth is the [`Store`] (`app_records`); this module keeps an in-memory copy,
//! indexed by insertion order, id and the bucket's name field, so that queries are evaluated
//! without touching the database. Invariants:
//! - Writes are serialised (one at a time): validate against memory, commit to the database in
//!   ONE transaction, apply to memory, then publish one [`AppChange`] on the bus. A failed
//!   validation or commit changes nothing, in memory or on disk, and publishes nothing.
//! - A record's JSON is rendered once per version (fields in schema order) and shared by every
//!   query result that contains it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use serde_json::{Map, Value};
use tokio::sync::broadcast;
use vitals_store::{AppRecord, AppWrite, Store, StoreError};

use crate::state::LiveEvent;

/// Most operations in one `store.transaction`.
pub const MAX_TX_OPS: usize = 100;
/// Longest string field, in bytes.
pub const MAX_STRING_BYTES: usize = 1024;
/// Longest client-chosen record id, in bytes.
pub const MAX_ID_BYTES: usize = 128;

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Str,
    Num,
}

struct FieldDef {
    name: &'static str,
    kind: Kind,
    required: bool,
    default: Option<&'static str>,
    one_of: &'static [&'static str],
}

const fn field(name: &'static str, kind: Kind, required: bool) -> FieldDef {
    FieldDef {
        name,
        kind,
        required,
        default: None,
        one_of: &[],
    }
}

/// A bucket's schema. `id` is always the key, a string, generated as a UUID when not given.
pub struct BucketDef {
    pub name: &'static str,
    fields: &'static [FieldDef],
    /// The field indexed for `metrics-by-name`-like lookups.
    index_field: &'static str,
}

pub static BUCKETS: [BucketDef; 2] = [
    BucketDef {
        name: "metrics",
        fields: &[
            field("name", Kind::Str, true),
            field("value", Kind::Num, true),
            FieldDef {
                default: Some(""),
                ..field("unit", Kind::Str, false)
            },
            field("timestamp", Kind::Num, true),
        ],
        index_field: "name",
    },
    BucketDef {
        name: "alerts",
        fields: &[
            field("metric", Kind::Str, true),
            field("threshold", Kind::Num, true),
            FieldDef {
                default: Some("low"),
                one_of: &["low", "medium", "high"],
                ..field("severity", Kind::Str, false)
            },
            field("timestamp", Kind::Num, true),
        ],
        index_field: "metric",
    },
];

pub const METRICS: usize = 0;
pub const ALERTS: usize = 1;

/// The bucket index of `name`.
pub fn bucket_index(name: &str) -> Result<usize, OpError> {
    BUCKETS
        .iter()
        .position(|b| b.name == name)
        .ok_or_else(|| OpError::new("NOT_FOUND", format!("unknown bucket {name:?}")))
}

/// An error in the protocol's terms: `code` is one of seed 001's codes.
#[derive(Debug, Clone, PartialEq)]
pub struct OpError {
    pub code: &'static str,
    pub message: String,
}

impl OpError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        OpError {
            code,
            message: message.into(),
        }
    }
    fn validation(message: impl Into<String>) -> Self {
        Self::new("VALIDATION_ERROR", message)
    }
}

/// One stored record.
#[derive(Debug)]
pub struct Record {
    pub id: Arc<str>,
    pub seq: i64,
    pub version: i64,
    pub created_at: i64,
    pub fields: Map<String, Value>,
    /// `{"id":..., <fields in schema order>, "_version":n}`.
    pub json: Arc<str>,
}

impl Record {
    fn new(
        def: &BucketDef,
        id: Arc<str>,
        seq: i64,
        version: i64,
        created_at: i64,
        fields: Map<String, Value>,
    ) -> Record {
        let mut json = String::with_capacity(128);
        json.push_str("{\"id\":");
        json.push_str(&Value::from(&*id).to_string());
        for f in def.fields {
            if let Some(v) = fields.get(f.name) {
                json.push_str(",\"");
                json.push_str(f.name);
                json.push_str("\":");
                json.push_str(&v.to_string());
            }
        }
        json.push_str(",\"_version\":");
        json.push_str(&version.to_string());
        json.push('}');
        Record {
            id,
            seq,
            version,
            created_at,
            fields,
            json: Arc::from(json),
        }
    }

    fn index_value(&self, def: &BucketDef) -> Option<&str> {
        self.fields.get(def.index_field).and_then(Value::as_str)
    }

    fn matches(&self, filter: &Map<String, Value>) -> bool {
        filter.iter().all(|(k, v)| match k.as_str() {
            "id" => v.as_str() == Some(&*self.id),
            "_version" => v.as_i64() == Some(self.version),
            _ => self.fields.get(k) == Some(v),
        })
    }
}

/// One bucket in memory.
#[derive(Default)]
pub struct BucketData {
    by_seq: BTreeMap<i64, Arc<Record>>,
    by_id: HashMap<Arc<str>, i64>,
    by_index: HashMap<String, BTreeSet<i64>>,
}

impl BucketData {
    fn get(&self, id: &str) -> Option<&Arc<Record>> {
        self.by_id.get(id).and_then(|s| self.by_seq.get(s))
    }

    fn put(&mut self, def: &BucketDef, r: Arc<Record>) {
        if let Some(old) = self.get(&r.id).cloned() {
            self.remove(def, &old.id);
        }
        if let Some(k) = r.index_value(def) {
            self.by_index
                .entry(k.to_string())
                .or_default()
                .insert(r.seq);
        }
        self.by_id.insert(Arc::clone(&r.id), r.seq);
        self.by_seq.insert(r.seq, r);
    }

    fn remove(&mut self, def: &BucketDef, id: &str) {
        let Some(seq) = self.by_id.remove(id) else {
            return;
        };
        if let Some(r) = self.by_seq.remove(&seq)
            && let Some(k) = r.index_value(def)
            && let Some(set) = self.by_index.get_mut(k)
        {
            set.remove(&seq);
            if set.is_empty() {
                self.by_index.remove(k);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.by_seq.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_seq.is_empty()
    }
}

fn json_array<'a>(items: impl Iterator<Item = &'a Arc<Record>>) -> String {
    let mut out = String::from("[");
    for (i, r) in items.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&r.json);
    }
    out.push(']');
    out
}

/// Every bucket in memory.
pub struct AppData {
    pub buckets: Vec<BucketData>,
    next_seq: i64,
}

impl AppData {
    /// All records, in insertion order (JSON array).
    pub fn all_json(&self, b: usize) -> String {
        json_array(self.buckets[b].by_seq.values())
    }

    /// Records whose index field (`name` for metrics) equals `key`, in insertion order.
    pub fn by_index_json(&self, b: usize, key: &str) -> String {
        let bucket = &self.buckets[b];
        match bucket.by_index.get(key) {
            Some(set) => json_array(set.iter().filter_map(|s| bucket.by_seq.get(s))),
            None => "[]".into(),
        }
    }

    /// The last `n` records by insertion, oldest first.
    pub fn last_json(&self, b: usize, n: usize) -> String {
        let bucket = &self.buckets[b];
        let skip = bucket.len().saturating_sub(n);
        json_array(bucket.by_seq.values().skip(skip))
    }

    pub fn count(&self, b: usize, filter: Option<&Map<String, Value>>) -> usize {
        match filter {
            None => self.buckets[b].len(),
            Some(f) => self.buckets[b]
                .by_seq
                .values()
                .filter(|r| r.matches(f))
                .count(),
        }
    }

    /// Records equal to `filter` on every given field, in insertion order.
    pub fn where_json(&self, b: usize, filter: &Map<String, Value>) -> String {
        let def = &BUCKETS[b];
        let bucket = &self.buckets[b];
        // Use the index when the filter names the index field.
        if let Some(Value::String(k)) = filter.get(def.index_field) {
            return match bucket.by_index.get(k.as_str()) {
                Some(set) => json_array(
                    set.iter()
                        .filter_map(|s| bucket.by_seq.get(s))
                        .filter(|r| r.matches(filter)),
                ),
                None => "[]".into(),
            };
        }
        json_array(bucket.by_seq.values().filter(|r| r.matches(filter)))
    }

    pub fn get_json(&self, b: usize, id: &str) -> Option<Arc<str>> {
        self.buckets[b].get(id).map(|r| Arc::clone(&r.json))
    }
}

/// What one commit changed, as published on the bus. Plain data (serialisable), so that a
/// replica can forward it to others (NATS) and they can apply the same invalidation.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AppChange {
    pub buckets: Vec<BucketChange>,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BucketChange {
    pub bucket: String,
    /// Index-field values (metric names) of records inserted, updated (old and new) or deleted.
    pub keys: BTreeSet<String>,
    /// The bucket was cleared: every view of it may have changed.
    pub cleared: bool,
}

impl AppChange {
    fn touch(&mut self, b: usize) -> &mut BucketChange {
        let name = BUCKETS[b].name;
        if let Some(i) = self.buckets.iter().position(|c| c.bucket == name) {
            return &mut self.buckets[i];
        }
        self.buckets.push(BucketChange {
            bucket: name.to_string(),
            ..BucketChange::default()
        });
        let last = self.buckets.len() - 1;
        &mut self.buckets[last]
    }
}

/// A write operation of the protocol.
#[derive(Debug, Clone)]
pub enum Op {
    Insert {
        bucket: usize,
        data: Value,
    },
    Update {
        bucket: usize,
        key: String,
        data: Value,
    },
    Delete {
        bucket: usize,
        key: String,
    },
    Clear {
        bucket: usize,
    },
}

impl Op {
    pub fn bucket(&self) -> usize {
        match self {
            Op::Insert { bucket, .. }
            | Op::Update { bucket, .. }
            | Op::Delete { bucket, .. }
            | Op::Clear { bucket } => *bucket,
        }
    }
}

enum Applied {
    Put(usize, Arc<Record>),
    Remove(usize, Arc<str>),
    Clear(usize),
}

/// The outcome of one operation, as JSON.
pub type OpResult = String;

/// Reads a field value, checking its type.
fn check_value(def: &BucketDef, f: &FieldDef, v: &Value) -> Result<(), OpError> {
    match (f.kind, v) {
        (Kind::Str, Value::String(s)) => {
            if s.len() > MAX_STRING_BYTES {
                return Err(OpError::validation(format!(
                    "{}.{} is longer than {MAX_STRING_BYTES} bytes",
                    def.name, f.name
                )));
            }
            if !f.one_of.is_empty() && !f.one_of.contains(&s.as_str()) {
                return Err(OpError::validation(format!(
                    "{}.{} must be one of {}",
                    def.name,
                    f.name,
                    f.one_of.join(", ")
                )));
            }
            Ok(())
        }
        (Kind::Num, Value::Number(_)) => Ok(()),
        (Kind::Str, _) => Err(OpError::validation(format!(
            "{}.{} must be a string",
            def.name, f.name
        ))),
        (Kind::Num, _) => Err(OpError::validation(format!(
            "{}.{} must be a number",
            def.name, f.name
        ))),
    }
}

/// Merges `data` into `base` and validates the result against the schema.
fn validate(
    def: &BucketDef,
    mut base: Map<String, Value>,
    data: &Value,
) -> Result<Map<String, Value>, OpError> {
    let Some(obj) = data.as_object() else {
        return Err(OpError::validation("`data` must be an object"));
    };
    for (k, v) in obj {
        if k == "id" || k == "_version" {
            continue;
        }
        let Some(f) = def.fields.iter().find(|f| f.name == k) else {
            return Err(OpError::validation(format!(
                "unknown field {k:?} in bucket {}",
                def.name
            )));
        };
        check_value(def, f, v)?;
        base.insert(k.clone(), v.clone());
    }
    for f in def.fields {
        if base.contains_key(f.name) {
            continue;
        }
        if let Some(d) = f.default {
            base.insert(f.name.to_string(), Value::from(d));
        } else if f.required {
            return Err(OpError::validation(format!(
                "{}.{} is required",
                def.name, f.name
            )));
        }
    }
    Ok(base)
}

/// Records as seen while planning a transaction: the committed data plus the transaction's
/// own earlier operations.
struct Overlay<'a> {
    base: &'a AppData,
    changed: HashMap<(usize, Arc<str>), Option<Arc<Record>>>,
    cleared: Vec<bool>,
}

impl Overlay<'_> {
    fn get(&self, b: usize, id: &str) -> Option<Arc<Record>> {
        if let Some(v) = self.changed.get(&(b, Arc::<str>::from(id))) {
            return v.clone();
        }
        if self.cleared[b] {
            return None;
        }
        self.base.buckets[b].get(id).cloned()
    }
}

/// The app store: memory index + database, with serialised writes.
pub struct AppStore {
    data: RwLock<AppData>,
    write: tokio::sync::Mutex<()>,
    store: Arc<dyn Store>,
    events: broadcast::Sender<LiveEvent>,
}

impl AppStore {
    /// Loads every record from the store.
    pub async fn open(
        store: Arc<dyn Store>,
        events: broadcast::Sender<LiveEvent>,
    ) -> Result<AppStore, StoreError> {
        let data = load(&*store).await?;
        Ok(AppStore {
            data: RwLock::new(data),
            write: tokio::sync::Mutex::new(()),
            store,
            events,
        })
    }

    /// Reads every record again (another replica committed some), in turn with this
    /// replica's own writes.
    pub async fn refresh(&self) -> Result<(), StoreError> {
        let _w = self.write.lock().await;
        let data = load(&*self.store).await?;
        *self.data.write().unwrap_or_else(|p| p.into_inner()) = data;
        Ok(())
    }

    /// Runs `f` on the data under the read lock (never held across an await).
    pub fn read<T>(&self, f: impl FnOnce(&AppData) -> T) -> T {
        f(&self.data.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Applies `ops` atomically: all or nothing, one database transaction, one bus event.
    pub async fn execute(&self, ops: Vec<Op>, now: i64) -> Result<Vec<OpResult>, OpError> {
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        let _w = self.write.lock().await;
        let (writes, applied, results, change) = self.read(|data| plan(data, &ops, now))?;
        if let Err(e) = self.store.app_write(&writes).await {
            return Err(match e {
                StoreError::Conflict(m) => OpError::new("CONFLICT", m),
                other => {
                    tracing::error!(error = %other, "app store commit failed");
                    OpError::new("INTERNAL_ERROR", "the hub could not store the change")
                }
            });
        }
        {
            let mut data = self.data.write().unwrap_or_else(|p| p.into_inner());
            for a in applied {
                match a {
                    Applied::Put(b, r) => {
                        data.next_seq = data.next_seq.max(r.seq + 1);
                        data.buckets[b].put(&BUCKETS[b], r);
                    }
                    Applied::Remove(b, id) => data.buckets[b].remove(&BUCKETS[b], &id),
                    Applied::Clear(b) => data.buckets[b] = BucketData::default(),
                }
            }
        }
        if !change.buckets.is_empty() {
            let _ = self.events.send(LiveEvent::App(Arc::new(change)));
        }
        Ok(results)
    }

    /// Deletes records created before `before` (retention), a chunk at a time.
    pub async fn retention(&self, before: i64) -> u64 {
        let mut total = 0u64;
        loop {
            let _w = self.write.lock().await;
            let gone = match self.store.app_delete_before(before, 5000).await {
                Ok(g) => g,
                Err(e) => {
                    tracing::warn!(error = %e, "app store retention failed; will retry");
                    break;
                }
            };
            if gone.is_empty() {
                break;
            }
            total += gone.len() as u64;
            let mut change = AppChange::default();
            {
                let mut data = self.data.write().unwrap_or_else(|p| p.into_inner());
                for (bucket, id) in gone {
                    let Ok(b) = bucket_index(&bucket) else {
                        continue;
                    };
                    let def = &BUCKETS[b];
                    if let Some(k) = data.buckets[b].get(&id).and_then(|r| r.index_value(def)) {
                        let k = k.to_string();
                        change.touch(b).keys.insert(k);
                    } else {
                        change.touch(b);
                    }
                    data.buckets[b].remove(def, &id);
                }
            }
            let _ = self.events.send(LiveEvent::App(Arc::new(change)));
        }
        total
    }
}

/// Every app record in the store, indexed.
async fn load(store: &dyn Store) -> Result<AppData, StoreError> {
    let rows = store.app_records().await?;
    let mut data = AppData {
        buckets: BUCKETS.iter().map(|_| BucketData::default()).collect(),
        next_seq: 1,
    };
    for r in rows {
        let Ok(b) = bucket_index(&r.bucket) else {
            continue;
        };
        let fields: Map<String, Value> = serde_json::from_str(&r.data)
            .map_err(|e| StoreError::Corrupt(format!("app record {}: {e}", r.id)))?;
        data.next_seq = data.next_seq.max(r.seq + 1);
        let rec = Record::new(
            &BUCKETS[b],
            Arc::from(r.id),
            r.seq,
            r.version,
            r.created_at,
            fields,
        );
        data.buckets[b].put(&BUCKETS[b], Arc::new(rec));
    }
    Ok(data)
}

type Plan = (Vec<AppWrite>, Vec<Applied>, Vec<OpResult>, AppChange);

fn plan(data: &AppData, ops: &[Op], now: i64) -> Result<Plan, OpError> {
    let mut ov = Overlay {
        base: data,
        changed: HashMap::new(),
        cleared: vec![false; BUCKETS.len()],
    };
    let mut next_seq = data.next_seq;
    let mut writes = Vec::with_capacity(ops.len());
    let mut applied = Vec::with_capacity(ops.len());
    let mut results = Vec::with_capacity(ops.len());
    let mut change = AppChange::default();
    for op in ops {
        let b = op.bucket();
        let def = &BUCKETS[b];
        match op {
            Op::Insert { data: d, .. } => {
                let fields = validate(def, Map::new(), d)?;
                let id: Arc<str> = match d.get("id") {
                    None | Some(Value::Null) => Arc::from(uuid::Uuid::new_v4().to_string()),
                    Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_ID_BYTES => {
                        Arc::from(s.as_str())
                    }
                    Some(_) => {
                        return Err(OpError::validation(format!(
                            "{}.id must be a string of 1 to {MAX_ID_BYTES} bytes",
                            def.name
                        )));
                    }
                };
                if ov.get(b, &id).is_some() {
                    return Err(OpError::new(
                        "CONFLICT",
                        format!("a record with id {id:?} already exists in {}", def.name),
                    ));
                }
                let rec = Arc::new(Record::new(def, Arc::clone(&id), next_seq, 1, now, fields));
                next_seq += 1;
                writes.push(AppWrite::Insert(AppRecord {
                    bucket: def.name.to_string(),
                    id: id.to_string(),
                    seq: rec.seq,
                    data: Value::Object(rec.fields.clone()).to_string(),
                    version: 1,
                    created_at: now,
                }));
                if let Some(k) = rec.index_value(def) {
                    change.touch(b).keys.insert(k.to_string());
                } else {
                    change.touch(b);
                }
                results.push(rec.json.to_string());
                ov.changed.insert((b, id), Some(Arc::clone(&rec)));
                applied.push(Applied::Put(b, rec));
            }
            Op::Update { key, data: d, .. } => {
                let Some(old) = ov.get(b, key) else {
                    return Err(OpError::new(
                        "NOT_FOUND",
                        format!("no record {key:?} in {}", def.name),
                    ));
                };
                if let Some(v) = d.get("id")
                    && v.as_str() != Some(key.as_str())
                {
                    return Err(OpError::validation("a record's id cannot change"));
                }
                match d.get("_version") {
                    None | Some(Value::Null) => {}
                    Some(v) if v.as_i64() == Some(old.version) => {}
                    Some(v) => {
                        return Err(OpError::new(
                            "CONFLICT",
                            format!(
                                "record {key:?} is at _version {}, not {v}; read it again",
                                old.version
                            ),
                        ));
                    }
                }
                let fields = validate(def, old.fields.clone(), d)?;
                let rec = Arc::new(Record::new(
                    def,
                    Arc::clone(&old.id),
                    old.seq,
                    old.version + 1,
                    old.created_at,
                    fields,
                ));
                writes.push(AppWrite::Update {
                    bucket: def.name.to_string(),
                    id: key.clone(),
                    data: Value::Object(rec.fields.clone()).to_string(),
                    version: rec.version,
                    expected_version: old.version,
                });
                let c = change.touch(b);
                for k in [old.index_value(def), rec.index_value(def)]
                    .into_iter()
                    .flatten()
                {
                    c.keys.insert(k.to_string());
                }
                results.push(rec.json.to_string());
                ov.changed
                    .insert((b, Arc::clone(&old.id)), Some(Arc::clone(&rec)));
                applied.push(Applied::Put(b, rec));
            }
            Op::Delete { key, .. } => {
                let Some(old) = ov.get(b, key) else {
                    return Err(OpError::new(
                        "NOT_FOUND",
                        format!("no record {key:?} in {}", def.name),
                    ));
                };
                writes.push(AppWrite::Delete {
                    bucket: def.name.to_string(),
                    id: key.clone(),
                });
                let c = change.touch(b);
                if let Some(k) = old.index_value(def) {
                    c.keys.insert(k.to_string());
                }
                results.push(r#"{"deleted":true}"#.to_string());
                ov.changed.insert((b, Arc::clone(&old.id)), None);
                applied.push(Applied::Remove(b, Arc::clone(&old.id)));
            }
            Op::Clear { .. } => {
                writes.push(AppWrite::Clear {
                    bucket: def.name.to_string(),
                });
                change.touch(b).cleared = true;
                ov.cleared[b] = true;
                ov.changed.retain(|(cb, _), _| *cb != b);
                results.push(r#"{"cleared":true}"#.to_string());
                applied.push(Applied::Clear(b));
            }
        }
    }
    Ok((writes, applied, results, change))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn empty() -> AppData {
        AppData {
            buckets: BUCKETS.iter().map(|_| BucketData::default()).collect(),
            next_seq: 1,
        }
    }

    #[test]
    fn defaults_generated_ids_and_field_order() {
        let d = empty();
        let (_, _, res, change) = plan(
            &d,
            &[Op::Insert {
                bucket: METRICS,
                data: json!({"name": "cpu", "value": 72.5, "timestamp": 1}),
            }],
            5,
        )
        .expect("valid");
        let v: Value = serde_json::from_str(&res[0]).expect("json");
        assert_eq!(v["unit"], "");
        assert_eq!(v["_version"], 1);
        assert_eq!(v["id"].as_str().map(str::len), Some(36), "a uuid");
        assert!(res[0].starts_with("{\"id\":"));
        assert!(res[0].ends_with(",\"_version\":1}"));
        assert!(change.buckets[0].keys.contains("cpu"));
    }

    #[test]
    fn schema_errors_are_validation_errors() {
        let d = empty();
        for bad in [
            json!({"name": "cpu", "timestamp": 1}),
            json!({"name": 3, "value": 1, "timestamp": 1}),
            json!({"name": "cpu", "value": "high", "timestamp": 1}),
            json!({"name": "cpu", "value": 1, "timestamp": 1, "extra": true}),
            json!([1, 2]),
        ] {
            let err = plan(
                &d,
                &[Op::Insert {
                    bucket: METRICS,
                    data: bad.clone(),
                }],
                0,
            )
            .err()
            .expect("invalid");
            assert_eq!(err.code, "VALIDATION_ERROR", "{bad}");
        }
        let err = plan(
            &d,
            &[Op::Insert {
                bucket: ALERTS,
                data: json!({"metric": "cpu", "threshold": 1, "severity": "dire", "timestamp": 1}),
            }],
            0,
        )
        .err()
        .expect("invalid severity");
        assert_eq!(err.code, "VALIDATION_ERROR");
    }
}
