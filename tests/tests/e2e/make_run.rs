//! `make run` as the README tells a new user to use it: in a terminal, stopped with Ctrl-C.
//!
//! A terminal's Ctrl-C reaches the whole foreground process group, `make` included; the test
//! gives `make run` a real pseudo-terminal (Python's `pty`, from the standard library), waits
//! for the stack to say it is running, types Ctrl-C and reads how `make` ended. Uses the
//! stack's fixed ports (8080, 8081, 9901, 10000), as `make run` does; the other tests use
//! ephemeral ports, so they never collide with it.

use std::process::Command;

use tempfile::TempDir;
use tollgate_e2e::workspace;

/// Runs `make -o build run` (the binaries `make test` built; no cargo inside a test) in a
/// pseudo-terminal, sends Ctrl-C once the stack is up, prints what the terminal showed and
/// exits with `make`'s exit code (negative: killed by that signal).
const DRIVER: &str = r#"
import os, pty, select, signal, sys, time
pid, fd = pty.fork()
if pid == 0:
    # As an interactive shell starts a foreground command: Ctrl-C and Ctrl-\ at their
    # defaults, whatever this process inherited (a test runner started in the background
    # ignores SIGINT, and so would everything it starts).
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)
    os.execvp("make", ["make", "--no-print-directory", "-o", "build", "run"])
shown = b""
def read_until(marker, seconds):
    global shown
    end = time.time() + seconds
    while time.time() < end and marker not in shown:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                shown += os.read(fd, 65536)
            except OSError:
                return
read_until(b"Press Ctrl-C to stop.", 60)
up = b"Press Ctrl-C to stop." in shown
# As a person would, after the message, not within the same millisecond.
read_until(b"\0 (nothing; just let the message settle)", 0.5)
os.write(fd, b"\x03")
read_until(b"\0 (read until the end)", 15)
_, status = os.waitpid(pid, 0)
sys.stdout.write(shown.decode(errors="replace"))
print("\nup: %s\nexit: %d" % (up, os.waitstatus_to_exitcode(status)))
"#;

#[test]
fn make_run_stops_cleanly_on_ctrl_c() {
    let dir = TempDir::new().expect("tempdir");
    let output = Command::new("python3")
        .args(["-c", DRIVER])
        .current_dir(workspace())
        .env("TOLLGATE_ADMIN_TOKEN", "make-run-admin-token-0123456789")
        .env(
            "TOLLGATE_KEY_SECRET",
            "make-run-key-secret-0123456789-0123456789",
        )
        // Its own registry, not the developer's .tollgate/ one.
        .env("TOLLGATE_REGISTRY", dir.path().join("registry.redb"))
        .env("TOLLGATE_STATE_FILE", dir.path().join("state.json"))
        .env_remove("REDIS_URL")
        .output()
        .expect("run python3");
    let shown = String::from_utf8_lossy(&output.stdout);
    assert!(
        shown.contains("\nup: True\n"),
        "the stack never said it was running:\n{shown}"
    );
    assert!(
        shown.contains("Tollgate stopped.") && shown.trim_end().ends_with("exit: 0"),
        "Ctrl-C is a clean stop and make exits 0:\n{shown}"
    );
    assert!(
        !shown.contains("make: ***"),
        "make reported an error:\n{shown}"
    );
}
