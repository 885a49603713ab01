//! A real `pisgate serve` child process for the tests that need one (logs, replicas,
//! signals). Its stdout and stderr are drained from the start by threads (a chatty process
//! must never block on a full pipe) and can be read at any time.

use crate::cli::pisgate;
use std::io::Read;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub struct Serve {
    child: Child,
    pub base: String,
    /// The admin listener (`/healthz`, `/readyz`, `/metrics`).
    pub admin: String,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
}

fn drain(mut pipe: impl Read + Send + 'static, into: Arc<Mutex<String>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            into.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    })
}

impl Serve {
    /// Starts `serve` on free ports with JSON logs (`RUST_LOG=info` unless `extra` says
    /// otherwise) and waits until `/readyz` answers 200 on the admin listener.
    pub async fn start(database_url: &str, extra: &[(&str, &str)]) -> Serve {
        let free_port = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        let (port, admin_port) = (free_port(), free_port());
        let base = format!("http://127.0.0.1:{port}");
        let admin = format!("http://127.0.0.1:{admin_port}");
        let mut cmd = pisgate();
        cmd.arg("serve")
            .envs(crate::helpers::database_env(database_url));
        cmd.env("PISGATE__SERVER__LISTEN", format!("127.0.0.1:{port}"))
            .env("PISGATE__SERVER__PUBLIC_URL", &base)
            .env("PISGATE__ADMIN__LISTEN", format!("127.0.0.1:{admin_port}"))
            .env("PISGATE__TELEMETRY__LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // An empty value removes the variable (to see a setting's own default).
        for (k, v) in extra {
            if v.is_empty() {
                cmd.env_remove(k);
            } else {
                cmd.env(k, v);
            }
        }
        let mut child = cmd.spawn().unwrap();
        let (stdout, stderr) = (Arc::default(), Arc::default());
        let readers = vec![
            drain(child.stdout.take().unwrap(), Arc::clone(&stdout)),
            drain(child.stderr.take().unwrap(), Arc::clone(&stderr)),
        ];
        let mut serve = Serve {
            child,
            base,
            admin,
            stdout,
            stderr,
            readers,
        };
        let client = reqwest::Client::new();
        let started = Instant::now();
        loop {
            if let Ok(r) = client.get(format!("{}/readyz", serve.admin)).send().await {
                if r.status() == 200 {
                    break;
                }
            }
            if let Ok(Some(status)) = serve.child.try_wait() {
                panic!("serve exited with {status}: {}", serve.logs());
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "serve did not come up: {}",
                serve.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        serve
    }

    /// [`Serve::start`] wired to the sandbox bank at `sandbox_url`.
    pub async fn with_bank(database_url: &str, sandbox_url: &str, extra: &[(&str, &str)]) -> Serve {
        let bank = format!("{sandbox_url}/personal");
        let mut all = vec![
            ("PISGATE__NORDEA__BASE_URL", bank.as_str()),
            ("PISGATE__NORDEA__ENVIRONMENT", "sandbox"),
        ];
        all.extend_from_slice(extra);
        Serve::start(database_url, &all).await
    }

    /// Everything it has written so far, stdout then stderr.
    pub fn logs(&self) -> String {
        format!(
            "{}{}",
            self.stdout.lock().unwrap(),
            self.stderr.lock().unwrap()
        )
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then waits: (exit status, stdout, stderr, how long it took to exit).
    pub async fn stop(mut self) -> (ExitStatus, String, String, Duration) {
        let started = Instant::now();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        tokio::task::spawn_blocking(move || {
            let exit = self.child.wait().unwrap();
            let took = started.elapsed();
            for r in self.readers.drain(..) {
                r.join().unwrap();
            }
            let out = self.stdout.lock().unwrap().clone();
            let err = self.stderr.lock().unwrap().clone();
            (exit, out, err, took)
        })
        .await
        .unwrap()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
