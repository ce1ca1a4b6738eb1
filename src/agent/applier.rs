//! Runs [`super::apply`] plans on a worker thread, one at a time, and hands
//! the outcomes back to the event loop through a `mio::Waker`. A newer
//! declaration submitted while a plan runs replaces any queued one.

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;

use super::apply::{execute, plan, ApplyEnv, Outcome};
use crate::config::overlay::Overlay;

pub struct Applier {
    waker: Arc<mio::Waker>,
    tx: Sender<(Overlay, Vec<Outcome>)>,
    rx: Receiver<(Overlay, Vec<Outcome>)>,
    env: ApplyEnv,
    running: bool,
    queued: Option<Overlay>,
    /// What the node has, as far as the agent applied it.
    pub applied: Overlay,
}

/// The end of one apply: all outcomes, and whether all succeeded.
pub struct Applied {
    pub outcomes: Vec<Outcome>,
    pub ok: bool,
}

impl Applier {
    pub fn new(waker: Arc<mio::Waker>, env: ApplyEnv) -> Applier {
        let (tx, rx) = channel();
        Applier {
            waker,
            tx,
            rx,
            env,
            running: false,
            queued: None,
            applied: Overlay::default(),
        }
    }

    pub fn is_busy(&self) -> bool {
        self.running || self.queued.is_some()
    }

    /// Bring the node to `declared` (what differs from what was applied).
    pub fn submit(&mut self, declared: Overlay) {
        if self.running {
            self.queued = Some(declared);
            return;
        }
        let p = plan(&self.applied, &declared);
        self.running = true;
        let (tx, waker, env) = (self.tx.clone(), self.waker.clone(), self.env.clone());
        if p.is_empty() {
            let _ = tx.send((declared, vec![]));
            let _ = waker.wake();
            return;
        }
        log::info!(target: "agent::apply", "applying {}", p.summary());
        std::thread::Builder::new()
            .name("pact-apply".into())
            .spawn(move || {
                let outcomes = execute(&p, &env);
                let _ = tx.send((declared, outcomes));
                let _ = waker.wake();
            })
            .map(|_| ())
            .unwrap_or_else(|e| {
                log::error!(target: "agent::apply", "cannot start the apply worker: {e}");
                self.running = false;
            });
    }

    /// The worker finished (called on the waker's token).
    pub fn on_wake(&mut self) -> Option<Applied> {
        let (declared, outcomes) = self.rx.try_recv().ok()?;
        self.running = false;
        let ok = outcomes.iter().all(Result::is_ok);
        for o in &outcomes {
            match o {
                Ok(what) => log::info!(target: "agent::apply", "{what}"),
                Err(why) => log::error!(target: "agent::apply", "{why}"),
            }
        }
        if ok {
            self.applied = declared;
        }
        if let Some(next) = self.queued.take() {
            self.submit(next);
        }
        Some(Applied { outcomes, ok })
    }
}
