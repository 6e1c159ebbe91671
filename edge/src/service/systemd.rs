//! systemd's notify protocol, without libsystemd: `READY=1` once the service works,
//! `WATCHDOG=1` while the frame loop is alive (so a hung camera or engine gets the
//! service restarted), `STOPPING=1` on shutdown, and `STATUS=` lines for `systemctl status`.

use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::serve::hub::Hub;

/// The notify socket from `$NOTIFY_SOCKET`, if the service runs under systemd.
pub struct Notifier {
    socket: UnixDatagram,
    address: std::os::unix::net::SocketAddr,
}

impl Notifier {
    /// From the environment; `None` when not started by systemd with `Type=notify`.
    pub fn from_env() -> Option<Notifier> {
        let path = std::env::var_os("NOTIFY_SOCKET")?;
        let path = path.to_string_lossy().into_owned();
        let address = if let Some(name) = path.strip_prefix('@') {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).ok()?
        } else {
            std::os::unix::net::SocketAddr::from_pathname(&path).ok()?
        };
        let socket = UnixDatagram::unbound().ok()?;
        Some(Notifier { socket, address })
    }

    /// Send one state line (e.g. `READY=1`); failures are logged, not fatal.
    pub fn notify(&self, state: &str) {
        if let Err(e) = self.socket.send_to_addr(state.as_bytes(), &self.address) {
            tracing::debug!("systemd notify '{state}': {e}");
        }
    }

    /// The watchdog interval systemd asks for (`$WATCHDOG_USEC`, for this process).
    pub fn watchdog_interval() -> Option<Duration> {
        if let Some(pid) = std::env::var("WATCHDOG_PID").ok()
            && pid.parse::<u32>().ok() != Some(std::process::id())
        {
            return None;
        }
        let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
        (usec > 0).then(|| Duration::from_micros(usec))
    }
}

/// Ping the watchdog at half its interval while the frame loop shows signs of life; stop
/// pinging when it has been silent for longer than the interval, so systemd restarts us.
pub fn watchdog(
    notifier: Arc<Notifier>,
    interval: Duration,
    hub: Arc<Hub>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("scion-watchdog".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let silence = hub.loop_silence();
                if silence < interval.as_secs_f64() {
                    notifier.notify("WATCHDOG=1");
                } else {
                    tracing::error!(
                        "the frame loop has been silent for {silence:.1} s; not pinging the \
                         watchdog"
                    );
                }
                std::thread::sleep(interval / 2);
            }
        })
}

/// While alive, asks systemd every few seconds for more start-up time
/// (`EXTEND_TIMEOUT_USEC`) and shows `what` and the seconds so far in `systemctl status`.
/// Dropping it stops.
pub struct ExtendStart {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Extend the start timeout while the returned guard lives (the first engine build).
pub fn extend_start_while(notifier: Arc<Notifier>, what: &'static str) -> ExtendStart {
    const EVERY: Duration = Duration::from_secs(5);
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::Builder::new()
        .name("scion-start".into())
        .spawn(move || {
            let started = std::time::Instant::now();
            while !flag.load(Ordering::Relaxed) {
                notifier.notify(&format!(
                    "EXTEND_TIMEOUT_USEC={}\nSTATUS={what} ({} s)",
                    (EVERY * 4).as_micros(),
                    started.elapsed().as_secs()
                ));
                let until = std::time::Instant::now() + EVERY;
                while !flag.load(Ordering::Relaxed) && std::time::Instant::now() < until {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        })
        .ok();
    ExtendStart { stop, thread }
}

impl Drop for ExtendStart {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
