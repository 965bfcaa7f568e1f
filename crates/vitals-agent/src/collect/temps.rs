//! Temperatures the kernel exposes: hwmon sensors (`/sys/class/hwmon/hwmon*/temp*_input`, named
//! `<chip>/<label>`), or thermal zones (`/sys/class/thermal/thermal_zone*/temp`, named by their
//! `type`) when there is no hwmon sensor. Sensors are discovered once (and again every few
//! minutes by the caller); each reading is then one small file read per sensor.
//! Values are millidegrees Celsius in sysfs; out-of-range readings are dropped.

use std::path::{Path, PathBuf};

use vitals_proto::limits::{MAX_NAME_BYTES, MAX_SMALL_LISTS};
use vitals_proto::sample::Temp;

/// A discovered sensor: its reported name and the file holding its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sensor {
    pub name: String,
    pub path: PathBuf,
}

fn read_trim(p: &Path) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

fn sorted_dir(p: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(p)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// Finds sensors under a sysfs root (normally `/sys`).
pub fn discover(sys: &Path) -> Vec<Sensor> {
    let mut out = Vec::new();
    for hw in sorted_dir(&sys.join("class/hwmon")) {
        let chip = read_trim(&hw.join("name")).unwrap_or_else(|| "hwmon".into());
        for f in sorted_dir(&hw) {
            let Some(file) = f.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let Some(stem) = file
                .strip_prefix("temp")
                .and_then(|r| r.strip_suffix("_input"))
            else {
                continue;
            };
            let label = read_trim(&hw.join(format!("temp{stem}_label")))
                .unwrap_or_else(|| format!("temp{stem}"));
            out.push(Sensor {
                name: truncate(format!("{chip}/{label}")),
                path: f,
            });
        }
    }
    if out.is_empty() {
        for z in sorted_dir(&sys.join("class/thermal")) {
            let is_zone = z
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("thermal_zone"));
            if !is_zone {
                continue;
            }
            let name = read_trim(&z.join("type")).unwrap_or_else(|| "thermal".into());
            out.push(Sensor {
                name: truncate(name),
                path: z.join("temp"),
            });
        }
    }
    dedupe_names(&mut out);
    out.truncate(MAX_SMALL_LISTS);
    out
}

fn truncate(mut s: String) -> String {
    if s.len() > MAX_NAME_BYTES {
        let mut cut = MAX_NAME_BYTES;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// Two chips of the same kind give the same names: suffix repeats with `#2`, `#3`.
fn dedupe_names(sensors: &mut [Sensor]) {
    for i in 1..sensors.len() {
        let base = sensors[i].name.clone();
        let mut n = 1;
        while sensors[..i].iter().any(|s| s.name == sensors[i].name) {
            n += 1;
            sensors[i].name = truncate(format!("{base}#{n}"));
        }
    }
}

/// Parses a sysfs millidegree value into Celsius, dropping impossible readings.
pub fn parse_millidegrees(text: &str) -> Option<f64> {
    let c = text.trim().parse::<f64>().ok()? / 1000.0;
    (c.is_finite() && (-273.15..=1000.0).contains(&c)).then_some(c)
}

/// Reads every sensor; unreadable ones are left out of this reading.
pub fn read(sensors: &[Sensor]) -> Vec<Temp> {
    sensors
        .iter()
        .filter_map(|s| {
            let celsius = parse_millidegrees(&std::fs::read_to_string(&s.path).ok()?)?;
            Some(Temp {
                name: s.name.clone(),
                celsius,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovers_hwmon_labels_and_reads_values() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (hw, chip) in [("hwmon0", "coretemp"), ("hwmon1", "coretemp")] {
            let d = dir.path().join("class/hwmon").join(hw);
            std::fs::create_dir_all(&d).expect("mkdir");
            std::fs::write(d.join("name"), format!("{chip}\n")).expect("write");
            std::fs::write(d.join("temp1_input"), "45500\n").expect("write");
            std::fs::write(d.join("temp1_label"), "Package id 0\n").expect("write");
            std::fs::write(d.join("temp2_input"), "-300000000\n").expect("write");
        }
        let s = discover(dir.path());
        let names: Vec<&str> = s.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            vec![
                "coretemp/Package id 0",
                "coretemp/temp2",
                "coretemp/Package id 0#2",
                "coretemp/temp2#2"
            ]
        );
        let t = read(&s);
        assert_eq!(t.len(), 2, "impossible readings are dropped");
        assert_eq!(t[0].celsius, 45.5);
    }

    #[test]
    fn falls_back_to_thermal_zones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let z = dir.path().join("class/thermal/thermal_zone0");
        std::fs::create_dir_all(&z).expect("mkdir");
        std::fs::write(z.join("type"), "x86_pkg_temp\n").expect("write");
        std::fs::write(z.join("temp"), "51000\n").expect("write");
        let s = discover(dir.path());
        assert_eq!(s.len(), 1);
        assert_eq!(read(&s)[0].celsius, 51.0);
        assert_eq!(read(&s)[0].name, "x86_pkg_temp");
    }
}
