//! The alert state machine, pure (no I/O, no clock): samples and timer ticks go in, state
//! changes, event updates and notifications to send come out as a [`Step`] that the runtime
//! persists in one transaction.
//!
//! Per (rule, device, subject): OK (no state) -> `pending` when the condition first holds ->
//! `firing` once it has held for `durationSec` (any sample where it does not hold returns to
//! OK) -> `firing` with `recoverSince` while the value is past the threshold by the
//! hysteresis margin -> resolved (back to OK) once that has lasted `recoverySec`. Timings use
//! the samples' own timestamps, so they are exact whatever the delivery delay. Device
//! `offline` rules are driven by [`Engine::tick`] with the hub's clock.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use vitals_proto::MetricSample;

use super::rule::{MaintenanceWindow, Metric, Rule};

/// One alert as the API, the store and notifications show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertEvent {
    pub id: String,
    pub rule_id: String,
    pub rule_name: String,
    pub device_id: String,
    pub device_name: String,
    pub metric: Metric,
    /// Mount point, GPU, sensor or container; empty for whole-device metrics.
    pub subject: String,
    pub op: String,
    pub threshold: f64,
    pub severity: super::rule::Severity,
    /// `firing` or `resolved`.
    pub state: String,
    /// When the condition started to hold (Unix ms).
    pub started_at: i64,
    /// When the alert fired (after its duration).
    pub fired_at: i64,
    #[serde(default)]
    pub ended_at: Option<i64>,
    /// The latest value seen.
    pub value: f64,
    /// The worst value seen.
    pub peak: f64,
    pub duration_sec: u32,
    #[serde(default)]
    pub acked_at: Option<i64>,
    #[serde(default)]
    pub acked_by: Option<String>,
    /// Notifications sent for this alert so far (firing, repeats, resolved).
    #[serde(default)]
    pub notifications: u32,
}

/// State of one (rule, device, subject) that is not OK. Persisted as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "camelCase")]
// Only non-OK (rule, device) pairs hold a phase, so the size difference costs little.
#[allow(clippy::large_enum_variant)]
pub enum Phase {
    #[serde(rename_all = "camelCase")]
    Pending { since: i64, peak: f64 },
    #[serde(rename_all = "camelCase")]
    Firing {
        event: AlertEvent,
        /// The firing notification went out (false while held back by quiet hours or a
        /// maintenance window: it goes out when they end, if still firing).
        notified: bool,
        last_notified: i64,
        recover_since: Option<i64>,
    },
}

#[derive(Debug, Clone, PartialEq)]
struct Slot {
    subject: Box<str>,
    phase: Phase,
    /// Newest sample time evaluated (older samples are ignored).
    last_ts: i64,
}

/// What to notify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Notice {
    Firing,
    Repeat,
    Resolved,
}

impl Notice {
    pub fn name(self) -> &'static str {
        match self {
            Notice::Firing => "firing",
            Notice::Repeat => "repeat",
            Notice::Resolved => "resolved",
        }
    }
}

/// The outcome of feeding the engine: apply it all in one transaction.
#[derive(Debug, Default)]
pub struct Step {
    /// `(key, Some(phase))` to store, `(key, None)` to delete.
    pub states: Vec<(String, Option<Phase>)>,
    /// Events to insert or replace.
    pub events: Vec<AlertEvent>,
    /// Notifications to send, with the rule that asks for them.
    pub notices: Vec<(Notice, AlertEvent, Arc<Rule>)>,
}

impl Step {
    pub fn is_empty(&self) -> bool {
        self.states.is_empty() && self.events.is_empty() && self.notices.is_empty()
    }
}

/// What the engine knows about a device.
#[derive(Debug, Clone, Default)]
pub struct DeviceInfo {
    pub name: String,
    /// Hub time of the last sample.
    pub last_seen: Option<i64>,
}

/// The engine: rules, windows, devices and the non-OK states.
pub struct Engine {
    rules: Vec<Arc<Rule>>,
    windows: Vec<MaintenanceWindow>,
    devices: HashMap<Arc<str>, DeviceInfo>,
    /// device -> rule id -> slots (one per subject).
    states: HashMap<Arc<str>, HashMap<Arc<str>, Vec<Slot>>>,
    /// Hub time the engine started: no device is declared offline before it has had
    /// `durationSec` to reconnect.
    started: i64,
    new_id: Box<dyn FnMut() -> String + Send>,
}

pub fn key(rule: &str, device: &str, subject: &str) -> String {
    format!("{rule}|{device}|{subject}")
}

impl Engine {
    pub fn new(started: i64, new_id: Box<dyn FnMut() -> String + Send>) -> Engine {
        Engine {
            rules: Vec::new(),
            windows: Vec::new(),
            devices: HashMap::new(),
            states: HashMap::new(),
            started,
            new_id,
        }
    }

    pub fn rules(&self) -> &[Arc<Rule>] {
        &self.rules
    }

    /// Restores persisted states (at start). Unreadable keys or states of unknown rules are
    /// returned for deletion.
    pub fn restore(&mut self, rows: Vec<(String, String)>) -> Vec<String> {
        let mut stale = Vec::new();
        for (k, json) in rows {
            let mut parts = k.splitn(3, '|');
            let (Some(rule), Some(device), Some(subject)) =
                (parts.next(), parts.next(), parts.next())
            else {
                stale.push(k);
                continue;
            };
            let Some(r) = self.rules.iter().find(|r| r.id == rule) else {
                stale.push(k);
                continue;
            };
            let Ok(phase) = serde_json::from_str::<Phase>(&json) else {
                tracing::warn!(key = %k, "unreadable alert state dropped");
                stale.push(k);
                continue;
            };
            let last_ts = match &phase {
                Phase::Pending { since, .. } => *since,
                Phase::Firing {
                    event,
                    last_notified,
                    recover_since,
                    ..
                } => event
                    .fired_at
                    .max(*last_notified)
                    .max(recover_since.unwrap_or(0)),
            };
            let rule_id = r.id_arc();
            self.states
                .entry(Arc::from(device))
                .or_default()
                .entry(rule_id)
                .or_default()
                .push(Slot {
                    subject: subject.into(),
                    phase,
                    last_ts,
                });
        }
        stale
    }

    /// Replaces the known devices. Alerts of devices that are gone end (`resolved`, without a
    /// notification) and their states are deleted.
    pub fn set_devices(&mut self, devices: impl IntoIterator<Item = (String, DeviceInfo)>) -> Step {
        let mut next: HashMap<Arc<str>, DeviceInfo> = HashMap::new();
        for (id, mut info) in devices {
            if let Some(old) = self.devices.get(id.as_str()) {
                info.last_seen = info.last_seen.max(old.last_seen);
            }
            next.insert(Arc::from(id), info);
        }
        self.devices = next;
        let gone: Vec<Arc<str>> = self
            .states
            .keys()
            .filter(|d| !self.devices.contains_key(&***d))
            .cloned()
            .collect();
        let mut step = Step::default();
        for d in gone {
            for (rule_id, slots) in self.states.remove(&d).unwrap_or_default() {
                for s in slots {
                    step.states.push((key(&rule_id, &d, &s.subject), None));
                    if let Phase::Firing { mut event, .. } = s.phase {
                        event.state = "resolved".into();
                        event.ended_at = Some(self.started.max(event.fired_at));
                        step.events.push(event);
                    }
                }
            }
        }
        step
    }

    /// Learns a device (or its new name) from its samples, before the next device reload.
    pub fn note_device(&mut self, device_id: &str, name: &str) {
        match self.devices.get_mut(device_id) {
            Some(d) if d.name == name => {}
            Some(d) => d.name = name.to_string(),
            None => {
                self.devices.insert(
                    Arc::from(device_id),
                    DeviceInfo {
                        name: name.to_string(),
                        last_seen: None,
                    },
                );
            }
        }
    }

    pub fn set_windows(&mut self, windows: Vec<MaintenanceWindow>) {
        self.windows = windows;
    }

    /// Replaces the rules. States of rules that were removed, disabled or changed are
    /// dropped; their firing alerts end (`resolved`, without a notification).
    pub fn set_rules(&mut self, rules: Vec<Rule>, now: i64) -> Step {
        let mut step = Step::default();
        let next: Vec<Arc<Rule>> = rules.into_iter().map(Arc::new).collect();
        for (device, by_rule) in &mut self.states {
            by_rule.retain(|rule_id, slots| {
                let keep = next.iter().any(|r| {
                    *r.id == **rule_id
                        && r.enabled
                        && self
                            .rules
                            .iter()
                            .find(|o| o.id == r.id)
                            .is_none_or(|o| o.updated_at == r.updated_at)
                });
                if !keep {
                    for s in slots.iter() {
                        step.states.push((key(rule_id, device, &s.subject), None));
                        if let Phase::Firing { event, .. } = &s.phase {
                            let mut e = event.clone();
                            e.state = "resolved".into();
                            e.ended_at = Some(now);
                            step.events.push(e);
                        }
                    }
                }
                keep
            });
        }
        self.rules = next.into_iter().filter(|r| r.enabled).collect();
        step
    }

    fn suppressed(&self, rule: &Rule, device: &str, now: i64) -> bool {
        is_suppressed(&self.windows, rule, device, now)
    }

    /// Evaluates a device's new samples (oldest first). `now` is the hub's clock, used for
    /// quiet hours and maintenance windows; state timings use the samples' timestamps.
    pub fn observe(
        &mut self,
        device_id: &str,
        samples: &[MetricSample],
        now: i64,
        step: &mut Step,
    ) {
        let Some((device_key, info)) = self.devices.get_key_value(device_id) else {
            return;
        };
        let device_key = Arc::clone(device_key);
        let device_name = info.name.clone();
        if let Some(d) = self.devices.get_mut(device_id) {
            d.last_seen = Some(now);
        }
        let suppressed: Vec<bool> = self
            .rules
            .iter()
            .map(|r| self.suppressed(r, device_id, now))
            .collect();
        let by_rule = self.states.entry(Arc::clone(&device_key)).or_default();
        for (ri, rule) in self.rules.iter().enumerate() {
            if !rule.applies_to(device_id) {
                continue;
            }
            if rule.metric == Metric::Offline {
                // Data arrived: an offline alert resolves at once.
                if let Some(slots) = by_rule.get_mut(rule.id.as_str()) {
                    for s in slots.drain(..) {
                        step.states
                            .push((key(&rule.id, device_id, &s.subject), None));
                        if let Phase::Firing {
                            mut event,
                            notified,
                            ..
                        } = s.phase
                        {
                            event.state = "resolved".into();
                            event.ended_at = Some(now);
                            if notified && !suppressed[ri] {
                                event.notifications += 1;
                                step.notices.push((
                                    Notice::Resolved,
                                    event.clone(),
                                    Arc::clone(rule),
                                ));
                            }
                            step.events.push(event);
                        }
                    }
                }
                continue;
            }
            // Most rules are OK for most devices: no entry, nothing allocated.
            let mut slots = by_rule.remove(rule.id.as_str()).unwrap_or_default();
            for sample in samples {
                let mut ctx = Ctx {
                    rule,
                    device_id,
                    device_name: &device_name,
                    ts: sample.ts,
                    suppressed: suppressed[ri],
                    new_id: &mut self.new_id,
                    step,
                };
                rule.metric.values(sample, |subject, v| {
                    if let Some(only) = &rule.subject
                        && only != subject
                    {
                        return;
                    }
                    ctx.eval(&mut slots, subject, v);
                });
            }
            if !slots.is_empty() {
                by_rule.insert(rule.id_arc(), slots);
            }
        }
        by_rule.retain(|_, slots| !slots.is_empty());
        if by_rule.is_empty() {
            self.states.remove(device_id);
        }
    }

    /// Timer work (every second): offline detection, and firing notifications held back by
    /// quiet hours or maintenance that may go out now.
    pub fn tick(&mut self, now: i64) -> Step {
        let mut step = Step::default();
        for rule in &self.rules {
            if rule.metric != Metric::Offline {
                continue;
            }
            let after = i64::from(rule.duration_sec) * 1000;
            if now - self.started < after {
                continue;
            }
            for (device_id, info) in &self.devices {
                if !rule.applies_to(device_id) {
                    continue;
                }
                let Some(seen) = info.last_seen else { continue };
                let silent = now - seen;
                // Nothing to do for a device that reports and has no offline state: no
                // allocation per device per second.
                let known = self
                    .states
                    .get(&**device_id)
                    .is_some_and(|m| m.contains_key(rule.id.as_str()));
                if !known && silent < after {
                    continue;
                }
                let slots = self
                    .states
                    .entry(Arc::clone(device_id))
                    .or_default()
                    .entry(rule.id_arc())
                    .or_default();
                match slots.first_mut() {
                    None if silent >= after => {
                        let suppressed = is_suppressed(&self.windows, rule, device_id, now);
                        let mut event = new_event(
                            (self.new_id)(),
                            rule,
                            device_id,
                            &info.name,
                            "",
                            seen,
                            now,
                            silent as f64 / 1000.0,
                        );
                        if !suppressed {
                            event.notifications = 1;
                            step.notices
                                .push((Notice::Firing, event.clone(), Arc::clone(rule)));
                        }
                        let phase = Phase::Firing {
                            event: event.clone(),
                            notified: !suppressed,
                            last_notified: now,
                            recover_since: None,
                        };
                        step.states
                            .push((key(&rule.id, device_id, ""), Some(phase.clone())));
                        step.events.push(event);
                        slots.push(Slot {
                            subject: "".into(),
                            phase,
                            last_ts: now,
                        });
                    }
                    Some(Slot {
                        phase:
                            Phase::Firing {
                                event,
                                last_notified,
                                notified: true,
                                ..
                            },
                        ..
                    }) if rule.repeat_sec > 0
                        && event.acked_at.is_none()
                        && now - *last_notified >= i64::from(rule.repeat_sec) * 1000 =>
                    {
                        event.value = silent as f64 / 1000.0;
                        event.peak = event.value;
                        event.notifications += 1;
                        *last_notified = now;
                        step.notices
                            .push((Notice::Repeat, event.clone(), Arc::clone(rule)));
                        step.events.push(event.clone());
                        if let Some(s) = slots.first() {
                            step.states
                                .push((key(&rule.id, device_id, ""), Some(s.phase.clone())));
                        }
                    }
                    _ => {}
                }
            }
        }
        // Held-back firing notifications.
        for (device_id, by_rule) in &mut self.states {
            for (rule_id, slots) in by_rule.iter_mut() {
                let Some(rule) = self.rules.iter().find(|r| *r.id == **rule_id) else {
                    continue;
                };
                for s in slots.iter_mut() {
                    if let Phase::Firing {
                        event,
                        notified,
                        last_notified,
                        ..
                    } = &mut s.phase
                        && !*notified
                        && event.acked_at.is_none()
                        && !is_suppressed(&self.windows, rule, device_id, now)
                    {
                        *notified = true;
                        *last_notified = now;
                        event.notifications += 1;
                        step.notices
                            .push((Notice::Firing, event.clone(), Arc::clone(rule)));
                        step.events.push(event.clone());
                        step.states
                            .push((key(rule_id, device_id, &s.subject), Some(s.phase.clone())));
                    }
                }
            }
        }
        self.states.retain(|_, by_rule| {
            by_rule.retain(|_, slots| !slots.is_empty());
            !by_rule.is_empty()
        });
        step
    }

    /// Acknowledges a firing alert (stops its repeats). Returns the updated event and the
    /// state to persist, or None when no firing alert has that id.
    pub fn ack(
        &mut self,
        event_id: &str,
        by: &str,
        now: i64,
    ) -> Option<(AlertEvent, String, Phase)> {
        for (device_id, by_rule) in &mut self.states {
            for (rule_id, slots) in by_rule.iter_mut() {
                for s in slots.iter_mut() {
                    if let Phase::Firing { event, .. } = &mut s.phase
                        && event.id == event_id
                    {
                        event.acked_at = Some(now);
                        event.acked_by = Some(by.to_string());
                        let e = event.clone();
                        return Some((e, key(rule_id, device_id, &s.subject), s.phase.clone()));
                    }
                }
            }
        }
        None
    }

    /// Firing alerts held in memory (for tests and the benchmark).
    pub fn firing(&self) -> usize {
        self.states
            .values()
            .flat_map(|r| r.values())
            .flatten()
            .filter(|s| matches!(s.phase, Phase::Firing { .. }))
            .count()
    }
}

/// Quiet hours of the rule, or a maintenance window covering (rule, device), at `now`.
fn is_suppressed(windows: &[MaintenanceWindow], rule: &Rule, device: &str, now: i64) -> bool {
    rule.quiet_hours.as_ref().is_some_and(|q| q.contains(now))
        || windows.iter().any(|w| w.covers(&rule.id, device, now))
}

impl Rule {
    fn id_arc(&self) -> Arc<str> {
        Arc::from(self.id.as_str())
    }
}

#[allow(clippy::too_many_arguments)]
fn new_event(
    id: String,
    rule: &Rule,
    device_id: &str,
    device_name: &str,
    subject: &str,
    since: i64,
    ts: i64,
    v: f64,
) -> AlertEvent {
    AlertEvent {
        id,
        rule_id: rule.id.clone(),
        rule_name: rule.name.clone(),
        device_id: device_id.to_string(),
        device_name: device_name.to_string(),
        metric: rule.metric,
        subject: subject.to_string(),
        op: rule.op.symbol().to_string(),
        threshold: rule.threshold,
        severity: rule.severity,
        state: "firing".into(),
        started_at: since,
        fired_at: ts,
        ended_at: None,
        value: v,
        peak: v,
        duration_sec: rule.duration_sec,
        acked_at: None,
        acked_by: None,
        notifications: 0,
    }
}

struct Ctx<'a> {
    rule: &'a Arc<Rule>,
    device_id: &'a str,
    device_name: &'a str,
    ts: i64,
    suppressed: bool,
    new_id: &'a mut Box<dyn FnMut() -> String + Send>,
    step: &'a mut Step,
}

impl Ctx<'_> {
    fn persist(&mut self, subject: &str, phase: Option<&Phase>) {
        self.step
            .states
            .push((key(&self.rule.id, self.device_id, subject), phase.cloned()));
    }

    fn eval(&mut self, slots: &mut Vec<Slot>, subject: &str, v: f64) {
        let rule = self.rule;
        let ts = self.ts;
        let holds = rule.op.holds(v, rule.threshold);
        let Some(i) = slots.iter().position(|s| &*s.subject == subject) else {
            if holds {
                let slot = Slot {
                    subject: subject.into(),
                    phase: Phase::Pending { since: ts, peak: v },
                    last_ts: ts,
                };
                slots.push(slot);
                let i = slots.len() - 1;
                if rule.duration_sec == 0 {
                    self.fire(slots, i, ts, v);
                } else {
                    let p = slots[i].phase.clone();
                    self.persist(subject, Some(&p));
                }
            }
            return;
        };
        if ts <= slots[i].last_ts {
            return; // replayed or out of order: already judged
        }
        slots[i].last_ts = ts;
        match &mut slots[i].phase {
            Phase::Pending { since, peak } => {
                if !holds {
                    slots.swap_remove(i);
                    self.persist(subject, None);
                    return;
                }
                if rule.op.worse(v, *peak) {
                    *peak = v;
                }
                if ts - *since >= i64::from(rule.duration_sec) * 1000 {
                    self.fire(slots, i, ts, v);
                }
            }
            Phase::Firing {
                event,
                notified,
                last_notified,
                recover_since,
            } => {
                event.value = v;
                if rule.op.worse(v, event.peak) {
                    event.peak = v;
                }
                if rule.op.clears(v, rule.threshold, rule.hysteresis) {
                    let since = *recover_since.get_or_insert(ts);
                    if ts - since >= i64::from(rule.recovery_sec) * 1000 {
                        let mut e = event.clone();
                        let notified = *notified;
                        e.state = "resolved".into();
                        e.ended_at = Some(ts);
                        if notified && !self.suppressed {
                            e.notifications += 1;
                            self.step
                                .notices
                                .push((Notice::Resolved, e.clone(), Arc::clone(rule)));
                        }
                        self.step.events.push(e);
                        slots.swap_remove(i);
                        self.persist(subject, None);
                    } else if since == ts {
                        let p = slots[i].phase.clone();
                        self.persist(subject, Some(&p));
                    }
                    return;
                }
                let mut changed = recover_since.take().is_some();
                if rule.repeat_sec > 0
                    && *notified
                    && event.acked_at.is_none()
                    && !self.suppressed
                    && ts - *last_notified >= i64::from(rule.repeat_sec) * 1000
                {
                    *last_notified = ts;
                    event.notifications += 1;
                    self.step
                        .notices
                        .push((Notice::Repeat, event.clone(), Arc::clone(rule)));
                    self.step.events.push(event.clone());
                    changed = true;
                }
                if changed {
                    let p = slots[i].phase.clone();
                    self.persist(subject, Some(&p));
                }
            }
        }
    }

    fn fire(&mut self, slots: &mut [Slot], i: usize, ts: i64, v: f64) {
        let (since, peak) = match slots[i].phase {
            Phase::Pending { since, peak } => (since, peak),
            Phase::Firing { .. } => return,
        };
        let mut event = new_event(
            (self.new_id)(),
            self.rule,
            self.device_id,
            self.device_name,
            &slots[i].subject,
            since,
            ts,
            v,
        );
        event.peak = if self.rule.op.worse(v, peak) { v } else { peak };
        let notified = !self.suppressed;
        if notified {
            event.notifications = 1;
            self.step
                .notices
                .push((Notice::Firing, event.clone(), Arc::clone(self.rule)));
        }
        self.step.events.push(event.clone());
        slots[i].phase = Phase::Firing {
            event,
            notified,
            last_notified: ts,
            recover_since: None,
        };
        let subject = slots[i].subject.clone();
        let p = slots[i].phase.clone();
        self.persist(&subject, Some(&p));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::rule::{Daily, MaintenanceWindow, Op, Severity};

    const T0: i64 = 1_700_000_000_000;

    fn rule(id: &str, metric: Metric, threshold: f64, dur: u32, rec: u32, repeat: u32) -> Rule {
        Rule {
            id: id.into(),
            name: format!("rule {id}"),
            device_ids: vec![],
            metric,
            subject: None,
            op: Op::Gt,
            threshold,
            duration_sec: dur,
            recovery_sec: rec,
            hysteresis: 0.0,
            severity: Severity::Critical,
            channel_ids: vec![],
            repeat_sec: repeat,
            enabled: true,
            quiet_hours: None,
            builtin: None,
            created_at: 0,
            updated_at: 0,
        }
    }

    fn engine(rules: Vec<Rule>) -> Engine {
        let mut n = 0;
        let mut e = Engine::new(
            T0 - 3_600_000,
            Box::new(move || {
                n += 1;
                format!("e{n}")
            }),
        );
        e.set_devices([(
            "d1".to_string(),
            DeviceInfo {
                name: "web-1".into(),
                last_seen: None,
            },
        )]);
        e.set_rules(rules, T0);
        e
    }

    fn sample(sec: i64, cpu: f64) -> MetricSample {
        MetricSample {
            ts: T0 + sec * 1000,
            cpu: vitals_proto::sample::Cpu {
                total: cpu,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// Feeds one sample per second from `values` starting at second `from`; returns the
    /// notifications as `(second, kind)`.
    fn feed(e: &mut Engine, from: i64, values: &[f64]) -> Vec<(i64, Notice)> {
        let mut out = Vec::new();
        for (i, v) in values.iter().enumerate() {
            let sec = from + i as i64;
            let mut step = Step::default();
            e.observe("d1", &[sample(sec, *v)], T0 + sec * 1000, &mut step);
            out.extend(step.notices.iter().map(|(n, ..)| (sec, *n)));
        }
        out
    }

    #[test]
    fn pending_firing_repeat_resolved_with_exact_timings() {
        // cpu > 90 for 5 s fires; repeats every 60 s; recovers after 3 s below.
        let mut e = engine(vec![rule("r", Metric::Cpu, 90.0, 5, 3, 60)]);
        let mut v = vec![50.0; 10]; // 0..9 quiet
        v.extend([95.0; 80]); // 10..89 above: pending at 10, fires at 15, repeat at 75
        v.extend([40.0; 5]); // 90..94 below: recovering from 90, resolved at 93
        let got = feed(&mut e, 0, &v);
        assert_eq!(
            got,
            vec![
                (15, Notice::Firing),
                (75, Notice::Repeat),
                (93, Notice::Resolved)
            ]
        );
        assert_eq!(e.firing(), 0);
    }

    #[test]
    fn a_dip_resets_the_pending_timer() {
        let mut e = engine(vec![rule("r", Metric::Cpu, 90.0, 5, 0, 0)]);
        // Above 0..3, a dip at 4, above again from 5: fires at 10, not at 5.
        let v = [
            95.0, 95.0, 95.0, 95.0, 80.0, 95.0, 95.0, 95.0, 95.0, 95.0, 95.0,
        ];
        let got = feed(&mut e, 0, &v);
        assert_eq!(got, vec![(10, Notice::Firing)]);
    }

    #[test]
    fn hysteresis_and_recovery_time_prevent_flapping() {
        let mut r = rule("r", Metric::Cpu, 90.0, 0, 5, 0);
        r.hysteresis = 5.0;
        let mut e = engine(vec![r]);
        // Fires at 0; then hovers around the threshold (89/91) for 30 s: never resolves.
        let mut v = vec![95.0];
        for i in 0..30 {
            v.push(if i % 2 == 0 { 89.0 } else { 91.0 });
        }
        // Then 86 (above threshold - margin): still not clear.
        v.extend([86.0; 10]);
        // Brief clear (84) for 3 s then up again: recovery timer resets.
        v.extend([84.0, 84.0, 84.0, 91.0]);
        // Clear for 6 s: resolves 5 s after the first clear sample.
        v.extend([80.0; 6]);
        let got = feed(&mut e, 0, &v);
        let first_clear = 1 + 30 + 10 + 4;
        assert_eq!(
            got,
            vec![(0, Notice::Firing), (first_clear + 5, Notice::Resolved)]
        );
    }

    #[test]
    fn restart_mid_pending_and_mid_firing_neither_repeats_nor_forgets() {
        let rules = || vec![rule("r", Metric::Cpu, 90.0, 10, 0, 0)];
        let persisted =
            |e: &mut Engine, from: i64, v: &[f64], store: &mut HashMap<String, String>| {
                let mut notes = Vec::new();
                for (i, x) in v.iter().enumerate() {
                    let sec = from + i as i64;
                    let mut step = Step::default();
                    e.observe("d1", &[sample(sec, *x)], T0 + sec * 1000, &mut step);
                    for (k, p) in step.states {
                        match p {
                            Some(p) => store.insert(k, serde_json::to_string(&p).expect("json")),
                            None => store.remove(&k),
                        };
                    }
                    notes.extend(step.notices.iter().map(|(n, ..)| (sec, *n)));
                }
                notes
            };
        let mut store = HashMap::new();
        let mut a = engine(rules());
        // Pending from 0; "crash" at 6.
        assert!(persisted(&mut a, 0, &[95.0; 7], &mut store).is_empty());
        let mut b = engine(rules());
        assert!(b.restore(store.clone().into_iter().collect()).is_empty());
        // Fires at 10 as if nothing happened (not at 17).
        let got = persisted(&mut b, 7, &[95.0; 8], &mut store);
        assert_eq!(got, vec![(10, Notice::Firing)]);
        // "Crash" mid-firing; the new engine does not fire again, and resolves once.
        let mut c = engine(rules());
        c.restore(store.clone().into_iter().collect());
        assert_eq!(c.firing(), 1);
        let got = persisted(&mut c, 15, &[95.0, 95.0, 50.0], &mut store);
        assert_eq!(got, vec![(17, Notice::Resolved)]);
        assert!(store.is_empty());
    }

    #[test]
    fn quiet_hours_hold_back_then_send_once() {
        let mut r = rule("r", Metric::Cpu, 90.0, 0, 0, 0);
        // Quiet for the first minute of the day containing T0 .. use a window instead.
        r.quiet_hours = None;
        let mut e = engine(vec![r]);
        e.set_windows(vec![MaintenanceWindow {
            id: "w".into(),
            name: "upgrade".into(),
            device_ids: vec!["d1".into()],
            rule_ids: vec![],
            starts_at: Some(T0),
            ends_at: Some(T0 + 10_000),
            daily: None,
            created_at: 0,
        }]);
        assert!(feed(&mut e, 0, &[95.0; 5]).is_empty(), "held back");
        assert!(e.tick(T0 + 9_000).notices.is_empty(), "window still on");
        let step = e.tick(T0 + 10_000);
        assert_eq!(step.notices.len(), 1, "sent once the window ends");
        assert!(e.tick(T0 + 11_000).notices.is_empty(), "and only once");
        // A daily quiet range that covers every minute except none: check parse path.
        assert!(
            Daily {
                start: "00:00".into(),
                end: "23:59".into(),
                utc_offset_min: 0
            }
            .contains(T0 - T0 % 86_400_000 + 60_000)
        );
    }

    #[test]
    fn offline_by_timer_and_back_on_data() {
        let mut r = rule("off", Metric::Offline, 0.0, 30, 0, 0);
        r.metric = Metric::Offline;
        let mut e = engine(vec![r]);
        let mut step = Step::default();
        e.observe("d1", &[sample(0, 10.0)], T0, &mut step);
        assert!(e.tick(T0 + 29_000).notices.is_empty());
        let s = e.tick(T0 + 30_000);
        assert_eq!(s.notices.len(), 1);
        assert_eq!(s.notices[0].0, Notice::Firing);
        assert!(
            e.tick(T0 + 40_000).notices.is_empty(),
            "no repeat configured"
        );
        let mut step = Step::default();
        e.observe("d1", &[sample(41, 10.0)], T0 + 41_000, &mut step);
        assert_eq!(step.notices.len(), 1);
        assert_eq!(step.notices[0].0, Notice::Resolved);
        assert_eq!(e.firing(), 0);
    }

    #[test]
    fn per_mount_disks_are_separate_alerts() {
        let mut e = engine(vec![rule("disk", Metric::Disk, 90.0, 0, 0, 0)]);
        let mut s = sample(0, 1.0);
        s.disk = vec![
            vitals_proto::sample::Disk {
                name: "/".into(),
                used: 95.0,
                total: 100.0,
                ..Default::default()
            },
            vitals_proto::sample::Disk {
                name: "/data".into(),
                used: 10.0,
                total: 100.0,
                ..Default::default()
            },
            vitals_proto::sample::Disk {
                name: "/var".into(),
                used: 99.0,
                total: 100.0,
                ..Default::default()
            },
        ];
        let mut step = Step::default();
        e.observe("d1", &[s], T0, &mut step);
        let subjects: Vec<&str> = step
            .notices
            .iter()
            .map(|(_, ev, _)| ev.subject.as_str())
            .collect();
        assert_eq!(subjects, ["/", "/var"]);
        assert_eq!(step.notices[0].1.device_name, "web-1");
    }

    #[test]
    fn removing_a_device_ends_its_alerts_quietly() {
        let mut e = engine(vec![rule("r", Metric::Cpu, 90.0, 0, 0, 0)]);
        assert_eq!(feed(&mut e, 0, &[95.0]).len(), 1);
        let step = e.set_devices(Vec::new());
        assert!(step.notices.is_empty());
        assert_eq!(step.events.len(), 1);
        assert_eq!(step.events[0].state, "resolved");
        assert_eq!(step.states.len(), 1);
        assert_eq!(step.states[0].1, None);
        assert_eq!(e.firing(), 0);
    }

    #[test]
    fn removing_a_rule_ends_its_alerts_quietly() {
        let mut e = engine(vec![rule("r", Metric::Cpu, 90.0, 0, 0, 0)]);
        assert_eq!(feed(&mut e, 0, &[95.0]).len(), 1);
        let step = e.set_rules(vec![], T0 + 5000);
        assert!(step.notices.is_empty());
        assert_eq!(step.events.len(), 1);
        assert_eq!(step.events[0].state, "resolved");
        assert_eq!(e.firing(), 0);
    }
}
