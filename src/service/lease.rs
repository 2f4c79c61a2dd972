//! Leadership (`[ha]`, contract 12): one row in the shared PostgreSQL
//! journal says who leads, at which epoch, until when, on the database's
//! clock. A standby takes the lease once it lapses, which raises the epoch;
//! the leader renews it every third of the lease. Every journal write of the
//! leader checks its epoch ([`super::postgres::Postgres::fenced`]), so a
//! leader that was paused or cut off past its lease can no longer write,
//! and its executors hold their jobs once the lease may have lapsed
//! ([`Held::valid`]). A leader that loses the lease steps down by exiting:
//! its supervisor starts it again, as a standby.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use postgres::{Client, NoTls};

use super::journal::JournalError;

/// One instance's side of the lease.
pub struct Lease {
    url: String,
    client: Option<Client>,
    /// This instance: host name, process id and a random part.
    pub holder: String,
    /// How long a lease lasts.
    pub lease: Duration,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("holder", &self.holder)
            .field("lease", &self.lease)
            .finish()
    }
}

impl Drop for Lease {
    /// The client blocks on its own runtime to close: off any runtime.
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let _ = std::thread::spawn(move || drop(client)).join();
        }
    }
}

/// The lease as the leader holds it: its epoch, and until when (on this
/// machine's monotonic clock, counted from before the last renewal was
/// asked) it certainly still holds.
#[derive(Clone, Debug)]
pub struct Held {
    /// The epoch taken.
    pub epoch: i64,
    until: Arc<Mutex<Instant>>,
}

impl Held {
    /// Whether the lease certainly still holds now: an executor runs a job
    /// only then (after a pause past the lease it waits for a renewal,
    /// which fails, and the instance steps down).
    pub fn valid(&self) -> bool {
        Instant::now() < *self.until.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn extend(&self, asked: Instant, lease: Duration) {
        // A margin for the round trip and the clocks' drift.
        *self.until.lock().unwrap_or_else(|e| e.into_inner()) = asked + lease.mul_f64(0.8);
    }
}

impl Lease {
    /// This instance's side of the lease in the journal at `url` (whose
    /// schema [`super::postgres::Postgres::open`] brought up to date).
    pub fn new(url: &str, lease: Duration) -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "remedy".into());
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        Lease {
            url: url.to_string(),
            client: None,
            holder: format!("{host}/{}/{nanos:08x}", std::process::id()),
            lease,
        }
    }

    fn client(&mut self) -> Result<&mut Client, JournalError> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.client = Some(Client::connect(&self.url, NoTls)?);
        }
        Ok(self.client.as_mut().expect("just connected"))
    }

    fn secs(&self) -> f64 {
        self.lease.as_secs_f64()
    }

    /// Takes the lease if nobody holds it (or its holder let it lapse):
    /// the new epoch, or `None` while another instance leads.
    pub fn try_acquire(&mut self) -> Result<Option<Held>, JournalError> {
        let asked = Instant::now();
        let (holder, secs) = (self.holder.clone(), self.secs());
        let row = self.client()?.query_opt(
            "INSERT INTO leader (id, holder, epoch, expires_at)
             VALUES (1, $1, 1, clock_timestamp() + make_interval(secs => $2))
             ON CONFLICT (id) DO UPDATE SET holder = excluded.holder, epoch = leader.epoch + 1,
               expires_at = excluded.expires_at
             WHERE leader.expires_at < clock_timestamp()
             RETURNING epoch",
            &[&holder, &secs],
        )?;
        Ok(row.map(|r| {
            let held = Held {
                epoch: r.get(0),
                until: Arc::new(Mutex::new(asked)),
            };
            held.extend(asked, self.lease);
            held
        }))
    }

    /// Renews the lease held at `held.epoch`: false once it lapsed or
    /// another instance took it.
    pub fn renew(&mut self, held: &Held) -> Result<bool, JournalError> {
        let asked = Instant::now();
        let (holder, secs) = (self.holder.clone(), self.secs());
        let renewed = self.client()?.execute(
            "UPDATE leader SET expires_at = clock_timestamp() + make_interval(secs => $3)
             WHERE id = 1 AND holder = $1 AND epoch = $2 AND expires_at >= clock_timestamp()",
            &[&holder, &held.epoch, &secs],
        )? == 1;
        if renewed {
            held.extend(asked, self.lease);
        }
        Ok(renewed)
    }

    /// Who leads now, if anyone: (holder, epoch).
    pub fn leader(&mut self) -> Result<Option<(String, i64)>, JournalError> {
        let row = self.client()?.query_opt(
            "SELECT holder, epoch FROM leader WHERE id = 1 AND expires_at >= clock_timestamp()",
            &[],
        )?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }
}
