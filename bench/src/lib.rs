//! What the benchmarks share: the tier table of the edge scenarios, driving `wrk` and reading
//! a process's CPU time and memory from /proc.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The tiers of the edge scenarios (`edge`, `instructions`): the shipped Standard, whose
/// tenants flood over their quota, and one no scenario's load reaches the limit of.
pub const TIERS: &str = r#"
default_tier = "standard"
[tiers.standard]
limit = 60
window_seconds = 60
[tiers.unlimited]
limit = 1000000000
window_seconds = 60
"#;

/// What `wrk --latency` reported for one run.
#[derive(Debug, Clone, Copy)]
pub struct WrkRun {
    pub requests_per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub requests: u64,
    pub non_2xx: u64,
}

/// A Lua script for `wrk` that sends `GET path`, cycling through `keys` in `x-api-key`.
pub fn wrk_script(dir: &Path, path: &str, keys: &[String]) -> PathBuf {
    let file = dir.join(format!(
        "keys-{}-{}.lua",
        keys.len(),
        path.trim_start_matches('/').replace('/', "-")
    ));
    let list: Vec<String> = keys.iter().map(|k| format!("\"{k}\"")).collect();
    let lua = format!(
        "local keys = {{{}}}\nlocal i = 0\nrequest = function()\n  i = i + 1\n  return wrk.format(\"GET\", \"{path}\", {{[\"x-api-key\"] = keys[(i % #keys) + 1]}})\nend\n",
        list.join(", ")
    );
    std::fs::write(&file, lua).expect("write wrk script");
    file
}

/// Runs `wrk -t{threads} -c{connections} -d{seconds}s --latency -s script url`.
pub fn run_wrk(url: &str, script: &Path, threads: u32, connections: u32, seconds: u64) -> WrkRun {
    let output = Command::new("wrk")
        .args([
            &format!("-t{threads}"),
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "--latency",
            "-s",
        ])
        .arg(script)
        .arg(url)
        .output()
        .expect("run wrk (apt-get install wrk)");
    let text = String::from_utf8_lossy(&output.stdout);
    let mut run = WrkRun {
        requests_per_second: f64::NAN,
        p50_ms: f64::NAN,
        p99_ms: f64::NAN,
        requests: 0,
        non_2xx: 0,
    };
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", value] => run.requests_per_second = value.parse().unwrap_or(f64::NAN),
            ["50%", value] => run.p50_ms = duration_ms(value),
            ["99%", value] => run.p99_ms = duration_ms(value),
            [count, "requests", "in", ..] => run.requests = count.parse().unwrap_or(0),
            ["Non-2xx", "or", "3xx", "responses:", count] => {
                run.non_2xx = count.parse().unwrap_or(0)
            }
            _ => {}
        }
    }
    run
}

fn duration_ms(text: &str) -> f64 {
    let split = text.find(|c: char| c.is_alphabetic()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().unwrap_or(f64::NAN);
    match unit {
        "us" => value / 1000.0,
        "ms" => value,
        "s" => value * 1000.0,
        "m" => value * 60_000.0,
        _ => f64::NAN,
    }
}

/// A process's CPU time (user + system) in clock ticks; 0 if it is gone.
pub fn cpu_ticks(pid: Option<u32>) -> u64 {
    let Some(pid) = pid else { return 0 };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces) start at state; utime and
    // stime are the 14th and 15th fields overall.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}

pub fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// A process's resident memory in bytes; 0 if it is gone.
pub fn rss_bytes(pid: Option<u32>) -> u64 {
    let Some(pid) = pid else { return 0 };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kib| kib * 1024)
}

/// The median; NaN for none.
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// A fresh directory for scripts.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tollgate-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("bench dir");
    dir
}
