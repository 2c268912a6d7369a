//! Real `redis-server` processes for tests: a standalone server or a 3-master cluster, on free
//! loopback ports, stopped when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::{Process, free_port};

pub struct RedisServer {
    pub port: u16,
    process: Process,
    dir: TempDir,
    append_only: bool,
}

impl RedisServer {
    /// A throwaway server: no persistence.
    pub fn start() -> RedisServer {
        Self::start_with(false)
    }

    /// A server that keeps its data across [`RedisServer::restart`] (append-only file).
    pub fn start_durable() -> RedisServer {
        Self::start_with(true)
    }

    fn start_with(append_only: bool) -> RedisServer {
        let dir = TempDir::new().expect("tempdir");
        let port = free_port();
        let process = spawn_server(port, dir.path(), append_only, &[]);
        wait_for_ping(port);
        RedisServer {
            port,
            process,
            dir,
            append_only,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts the server again on the same port and data directory.
    pub fn restart(&mut self) {
        self.process.kill();
        self.process = spawn_server(self.port, self.dir.path(), self.append_only, &[]);
        wait_for_ping(self.port);
    }

    /// Runs `redis-cli` against this server; returns its stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        cli(self.port, args)
    }

    /// Calls per command since the last `CONFIG RESETSTAT`, from `INFO commandstats`. Redis
    /// counts the commands a script runs under their own names, beside the `EVALSHA`.
    pub fn command_calls(&self) -> Vec<(String, u64)> {
        self.cli(&["info", "commandstats"])
            .lines()
            .filter_map(|line| {
                let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(":calls=")?;
                Some((name.to_owned(), rest.split(',').next()?.parse().ok()?))
            })
            .collect()
    }

    /// Calls of one command since the last `CONFIG RESETSTAT`.
    pub fn calls_of(&self, command: &str) -> u64 {
        self.command_calls()
            .into_iter()
            .find(|(name, _)| name == command)
            .map_or(0, |(_, calls)| calls)
    }
}

pub struct RedisCluster {
    pub ports: Vec<u16>,
    _nodes: Vec<Process>,
    _dir: TempDir,
}

impl RedisCluster {
    /// Three masters, no replicas, all slots assigned.
    pub fn start() -> RedisCluster {
        let dir = TempDir::new().expect("tempdir");
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let nodes: Vec<Process> = ports
            .iter()
            .map(|port| {
                let node_dir: PathBuf = dir.path().join(port.to_string());
                std::fs::create_dir_all(&node_dir).expect("node dir");
                spawn_server(
                    *port,
                    &node_dir,
                    false,
                    &["--cluster-enabled", "yes", "--cluster-node-timeout", "5000"],
                )
            })
            .collect();
        for port in &ports {
            wait_for_ping(*port);
        }
        let mut create = Command::new("redis-cli");
        create.args(["--cluster", "create"]);
        for port in &ports {
            create.arg(format!("127.0.0.1:{port}"));
        }
        let output = create
            .arg("--cluster-yes")
            .output()
            .expect("redis-cli --cluster create");
        assert!(
            output.status.success(),
            "cluster create failed: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        let started = Instant::now();
        while !ports
            .iter()
            .all(|port| cli(*port, &["cluster", "info"]).contains("cluster_state:ok"))
        {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "cluster not ok within 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        RedisCluster {
            ports,
            _nodes: nodes,
            _dir: dir,
        }
    }

    pub fn urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect()
    }
}

fn spawn_server(port: u16, dir: &Path, append_only: bool, extra: &[&str]) -> Process {
    let mut command = Command::new("redis-server");
    command
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--appendonly", if append_only { "yes" } else { "no" }])
        .arg("--dir")
        .arg(dir)
        .args(extra);
    Process::spawn(&format!("redis-{port}"), command, dir)
}

fn cli(port: u16, args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("run redis-cli; run `make test` to install redis-server");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn wait_for_ping(port: u16) {
    let started = Instant::now();
    while cli(port, &["ping"]).trim() != "PONG" {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "redis on {port} not up within 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
