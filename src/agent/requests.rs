//! What the control socket's requests do (grammar in `man/pact-protocol.7`):
//!
//! ```text
//! hello
//! status
//! service status [NAME]
//! service start|stop|restart NAME [wait=false]
//! service logs NAME [lines=N] [follow=true]     (-n N, -f also accepted)
//! reload
//! shutdown [reboot=true]                        (--reboot also accepted)
//! cancel                                        (ends a follow stream)
//! ```

use std::time::{Duration, Instant};

use mio::Token;

use super::boot::{BootState, Phase};
use super::control::{Input, Mode};
use super::daemon::{Agent, Waiter};
use super::supervisor::{CommandError, Record, State};
use crate::proto::{err_line, ok_line, ExitCode, Record as Rec, Request};
use crate::util::time::{rfc3339_secs, unix_ms};

/// Lines of `service logs` when not told.
const DEFAULT_LOG_LINES: usize = 50;

impl Agent {
    pub(super) fn on_connection(&mut self, t: Token, now: Instant) {
        let mut inputs = self.control.on_event(self.poll.registry(), t, now);
        while !inputs.is_empty() {
            for input in inputs {
                match input {
                    Input::Request(t, r) => self.handle_request(t, r, now),
                    Input::Bad(t, e) => {
                        self.reply(t, vec![err_line(ExitCode::Invalid, &e.to_string())])
                    }
                }
            }
            // A connection that sent several requests gets them answered in order.
            inputs = self.control.next_inputs(self.poll.registry(), t);
        }
        if !self.control.owns(t) {
            self.sources.remove(&t);
            self.waiters.retain(|w| w.token != t);
        }
    }

    /// Send the whole answer and go back to reading.
    pub(super) fn reply(&mut self, t: Token, lines: Vec<String>) {
        self.control.send(self.poll.registry(), t, &lines);
        self.control.finish(self.poll.registry(), t);
    }

    fn handle_request(&mut self, t: Token, req: Request, now: Instant) {
        let pos = req.positional();
        let words: Vec<&str> = pos.iter().map(|s| s.as_ref()).collect();
        // A misspelt option must not turn into the default (`shutdown
        // rebot=true` would power off): every option is checked first.
        if let Err(e) = check_options(&words, &req) {
            return self.reply(t, vec![err_line(ExitCode::Invalid, &e)]);
        }
        match words.as_slice() {
            ["hello"] => self.reply(
                t,
                vec![ok_line(
                    &Rec::new()
                        .field("name", "pact-agent")
                        .field("version", env!("CARGO_PKG_VERSION"))
                        .field("ops", "hello,status,service,reload,shutdown,cancel"),
                )],
            ),
            ["status"] => {
                let rec = self.status_record(now);
                self.reply(t, vec![rec.to_line(), "ok".into()]);
            }
            ["service", "status"] => {
                let mut lines: Vec<String> = self
                    .sup
                    .records()
                    .iter()
                    .map(|r| self.service_record(r, now).to_line())
                    .collect();
                lines.push("ok".into());
                self.reply(t, lines);
            }
            ["service", "status", name] => match self.sup.get(name) {
                Some(r) => {
                    let line = self.service_record(r, now).to_line();
                    self.reply(t, vec![line, "ok".into()]);
                }
                None => self.reply(t, vec![unknown(name)]),
            },
            ["service", verb @ ("start" | "stop" | "restart"), name] => {
                self.service_command(t, verb, name, &req, now)
            }
            ["service", "logs", name, rest @ ..] => self.service_logs(t, name, rest, &req),
            ["reload"] if self.sup.is_shutting_down() => self.reply(
                t,
                vec![err_line(
                    ExitCode::Conflict,
                    "the node is shutting down: nothing is reloaded",
                )],
            ),
            ["reload"] => match self.reload(now) {
                Ok(summary) => self.reply(t, vec![ok_line(&summary)]),
                Err(e) => self.reply(t, vec![err_line(ExitCode::Invalid, &e)]),
            },
            ["shutdown", rest @ ..] if rest.iter().all(|w| *w == "--reboot") => {
                let reboot = !rest.is_empty() || is_true(req.option("reboot"));
                self.reply(
                    t,
                    vec![ok_line(
                        &Rec::new().field("action", if reboot { "reboot" } else { "poweroff" }),
                    )],
                );
                log::info!(target: "agent::control", "shutdown requested on the control socket");
                self.begin_shutdown(now, reboot);
            }
            ["cancel"] => self.reply(t, vec!["ok".into()]),
            ["stall"] if self.stall_hook => {
                // TEST HOOK ([agent.watchdog] stall_hook): hang the loop so
                // the hardware watchdog stops being petted.
                log::warn!(target: "agent::control", "stall hook: the event loop stops now");
                self.reply(t, vec!["ok".into()]);
                loop {
                    std::thread::sleep(Duration::from_secs(3600));
                }
            }
            [] => self.reply(t, vec![err_line(ExitCode::Invalid, "empty request")]),
            _ => {
                let shown: String = req.words.join(" ").chars().take(80).collect();
                self.reply(
                    t,
                    vec![err_line(
                        ExitCode::Invalid,
                        &format!("unknown request \"{shown}\" (try: hello)"),
                    )],
                );
            }
        }
    }

    fn service_command(&mut self, t: Token, verb: &str, name: &str, req: &Request, now: Instant) {
        let result = match verb {
            "start" => self.sup.start(now, name),
            "stop" => self.sup.stop(now, name),
            _ => self.sup.restart(now, name),
        };
        match result {
            Err(CommandError::UnknownService(n)) => self.reply(t, vec![unknown(&n)]),
            Err(e @ CommandError::ShuttingDown) => {
                self.reply(t, vec![err_line(ExitCode::Conflict, &e.to_string())])
            }
            Ok(actions) => {
                log::info!(target: "agent::control", "service {verb} {name}");
                self.perform(now, actions);
                if req.option("wait").is_some_and(|v| !is_true(Some(v))) {
                    let state = self.sup.get(name).map_or("removed", |r| r.state.as_str());
                    self.reply(
                        t,
                        vec![ok_line(
                            &Rec::new().field("name", name).field("state", state),
                        )],
                    );
                    return;
                }
                let spec = self.sup.get(name).map(|r| r.spec.clone());
                let budget = spec.map_or(Duration::from_secs(60), |s| {
                    s.stop_timeout + s.start_timeout + Duration::from_secs(15)
                });
                let want_running = verb != "stop";
                // A restart's stop and start both came: count from before it.
                let seen = self.sup.get(name).map_or(0, |r| r.arrivals(want_running));
                self.waiters.push(Waiter {
                    token: t,
                    service: name.to_string(),
                    want_running,
                    deadline: now + budget,
                    seen,
                });
                self.check_waiters(now);
            }
        }
    }

    /// Answer requests waiting for a service to settle.
    pub(super) fn check_waiters(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.waiters.len() {
            let w = &self.waiters[i];
            let answer = match self.sup.get(&w.service) {
                // Removed by a reload while it waited: stopped, so a stop
                // is done and a start never will be.
                None if w.want_running => Some(err_line(
                    ExitCode::General,
                    &format!(
                        "service \"{}\" was removed by a reload; it was not started",
                        w.service
                    ),
                )),
                None => Some(ok_line(
                    &Rec::new()
                        .field("name", &w.service)
                        .field("state", "removed"),
                )),
                Some(r) => {
                    let now_there = if w.want_running {
                        r.state == State::Running
                    } else {
                        matches!(r.state, State::Stopped | State::Failed) && !r.scope_busy
                    };
                    // Reached, though another request moved it on since.
                    let passed = r.arrivals(w.want_running) > w.seen;
                    if now_there || passed {
                        let state = match (now_there, w.want_running) {
                            (true, _) => r.state.as_str(),
                            (false, true) => State::Running.as_str(),
                            (false, false) => State::Stopped.as_str(),
                        };
                        let mut rec = Rec::new().field("name", &w.service).field("state", state);
                        if let Some(pid) = r.pid.filter(|_| now_there) {
                            rec.push("pid", pid);
                        }
                        Some(ok_line(&rec))
                    } else if w.want_running
                        && (r.state == State::Failed || (r.state == State::Stopped && !r.want))
                    {
                        let why = r.reason.clone().unwrap_or_else(|| "stopped".into());
                        Some(err_line(
                            ExitCode::General,
                            &format!("service \"{}\" {}: {why}", w.service, r.state.as_str()),
                        ))
                    } else if let Some(why) = w
                        .want_running
                        .then(|| self.sup.dependency_failure(&w.service))
                        .flatten()
                        .filter(|_| r.state == State::Stopped)
                    {
                        Some(err_line(
                            ExitCode::General,
                            &format!("service \"{}\" cannot start: {why}", w.service),
                        ))
                    } else if now >= w.deadline {
                        Some(err_line(
                            ExitCode::Unreachable,
                            &format!(
                                "timed out waiting for \"{}\" (now {})",
                                w.service,
                                r.state.as_str()
                            ),
                        ))
                    } else {
                        None
                    }
                }
            };
            match answer {
                Some(line) => {
                    let t = self.waiters.remove(i).token;
                    self.reply(t, vec![line]);
                    // Requests pipelined behind this one.
                    let pending = self.control.next_inputs(self.poll.registry(), t);
                    for input in pending {
                        match input {
                            Input::Request(t, r) => self.handle_request(t, r, now),
                            Input::Bad(t, e) => {
                                self.reply(t, vec![err_line(ExitCode::Invalid, &e.to_string())])
                            }
                        }
                    }
                }
                None => i += 1,
            }
        }
    }

    fn service_logs(&mut self, t: Token, name: &str, rest: &[&str], req: &Request) {
        if self.sup.get(name).is_none() {
            return self.reply(t, vec![unknown(name)]);
        }
        let mut lines = DEFAULT_LOG_LINES;
        let mut follow = is_true(req.option("follow"));
        let mut it = rest.iter();
        while let Some(w) = it.next() {
            match *w {
                "-f" | "--follow" => follow = true,
                "-n" | "--lines" => match it.next().and_then(|n| n.parse().ok()) {
                    Some(n) => lines = n,
                    None => {
                        return self
                            .reply(t, vec![err_line(ExitCode::Invalid, "-n needs a number")])
                    }
                },
                other => {
                    return self.reply(
                        t,
                        vec![err_line(
                            ExitCode::Invalid,
                            &format!("unexpected word \"{other}\""),
                        )],
                    )
                }
            }
        }
        if let Some(n) = req.option("lines") {
            match n.parse() {
                Ok(n) => lines = n,
                Err(_) => {
                    return self.reply(
                        t,
                        vec![err_line(
                            ExitCode::Invalid,
                            &format!("lines=\"{n}\" is not a number"),
                        )],
                    )
                }
            }
        }
        let mut text = String::new();
        for l in self.logs.tail(name, lines) {
            text.push_str(&l);
            text.push('\n');
        }
        let mut out = Vec::new();
        if !text.is_empty() {
            out.push(format!("body +{}", text.len()));
        }
        self.control.send(self.poll.registry(), t, &out);
        self.control
            .send_bytes(self.poll.registry(), t, text.as_bytes());
        if follow {
            self.control.set_mode(
                t,
                Mode::Follow {
                    service: name.to_string(),
                },
            );
        } else {
            self.reply(t, vec!["ok".into()]);
        }
    }

    /// Re-read the service declarations; on error the running set stays.
    pub(super) fn reload(&mut self, now: Instant) -> Result<Rec, String> {
        let Some(path) = self.services_file.clone() else {
            return Err(
                "no services file to reload (give --services or agent.services_file)".into(),
            );
        };
        let (set, overlay) = self.load_declarations(&path)?;
        super::cache_services(&path, &self.cfg.cached_services());
        let (mut added, mut changed, mut removed) = (0, 0, 0);
        for s in &set.services {
            match self.services.get(&s.name) {
                None => added += 1,
                Some(old) if old != s => changed += 1,
                _ => {}
            }
        }
        for s in &self.services.services {
            if set.get(&s.name).is_none() {
                removed += 1;
            }
        }
        log::info!(target: "agent::loop", "reloaded {}: {added} added, {changed} changed, {removed} removed", path.display());
        self.services = set.clone();
        if overlay != self.declared {
            self.declared = overlay.clone();
            self.applier.submit(overlay);
        }
        // Before StartServices the boot will start them; while it waits to
        // retry PullOverlay or StartServices, the retry runs now with the
        // new set; after, apply now.
        let retrying = match self.boot.state {
            BootState::Pending {
                phase: phase @ (Phase::PullOverlay | Phase::StartServices),
                ..
            } => Some(phase),
            _ => None,
        };
        if let Some(phase) = retrying.filter(|_| self.boot.retry_now()) {
            log::info!(target: "agent::boot", "{}: retrying now with the reloaded declarations", phase.as_str());
        }
        let retrying = retrying == Some(Phase::StartServices);
        let started = self.boot.done(Phase::PullOverlay) && !retrying;
        if started {
            let actions = self.sup.replace(now, &set);
            self.perform(now, actions);
        }
        Ok(Rec::new()
            .field("added", added)
            .field("changed", changed)
            .field("removed", removed))
    }

    fn status_record(&self, now: Instant) -> Rec {
        let recs = self.sup.records();
        let running = recs.iter().filter(|r| r.state == State::Running).count();
        let failed = recs.iter().filter(|r| r.state == State::Failed).count();
        let state = if self.sup.is_shutting_down() {
            "stopping"
        } else if self.boot.is_failed() {
            "boot_failed"
        } else if self.ready_at.is_some() {
            "ready"
        } else if self.stalled.is_some() {
            "stalled"
        } else {
            "starting"
        };
        let mut rec = Rec::new()
            .field("node", self.cfg.node_id())
            .field(
                "vcluster",
                self.cfg
                    .vcluster
                    .clone()
                    .unwrap_or_else(|| self.services.vcluster.clone()),
            )
            .field("state", state)
            .field("pid1", self.pid1)
            .field("backend", "pact")
            .field(
                "uptime_s",
                format!(
                    "{:.1}",
                    now.saturating_duration_since(self.started).as_secs_f64()
                ),
            )
            .field("services", recs.len())
            .field("running", running)
            .field("failed", failed);
        if let Some(r) = self.ready_at {
            rec.push(
                "ready_ms",
                format!(
                    "{:.1}",
                    r.saturating_duration_since(self.started).as_secs_f64() * 1000.0
                ),
            );
        }
        rec.push("boot_phase", self.boot.current());
        // Ready's own timing is `ready_ms` above (when the node said so).
        for (phase, at) in self
            .boot
            .completed
            .iter()
            .filter(|(p, _)| *p != Phase::Ready)
        {
            rec.push(
                &format!("{}_ms", phase.as_str()),
                format!("{:.1}", at.as_secs_f64() * 1000.0),
            );
        }
        rec.push(
            "kernel_ms_at_start",
            format!("{:.0}", self.kernel_ms_at_start),
        );
        if let Some(e) = &self.boot.last_error {
            rec.push("boot_error", e);
        }
        if let super::boot::BootState::Failed { phase, .. } = &self.boot.state {
            rec.push("boot_failed_phase", phase.as_str());
        }
        match &self.journal {
            Some(link) => {
                rec.push(
                    "journal",
                    link.connected_to.as_deref().unwrap_or("disconnected"),
                );
                rec.push("overlay_version", self.journal_view.version);
                rec.push("node_version", self.journal_view.node_version);
                rec.push("journal_seq", self.journal_view.seq);
            }
            None => rec.push("journal", "none"),
        }
        match &self.watchdog {
            Some(wd) => {
                rec.push("watchdog", &wd.identity);
                rec.push("watchdog_timeout_s", wd.timeout);
                rec.push("watchdog_pets", wd.pets);
            }
            None => rec.push("watchdog", "none"),
        }
        match &self.cgroups {
            Some(cg) => {
                rec.push("cgroup_root", cg.root().display());
                rec.push("controllers", cg.controllers().join(","));
                rec.push("cgroup_kill", cg.has_kill());
            }
            None => rec.push("cgroup_root", "none"),
        }
        rec.push("orphans_reaped", self.orphans_reaped);
        if let Some(f) = &self.stalled {
            rec.push("failed_services", f.join(","));
        }
        rec
    }

    fn service_record(&self, r: &Record, now: Instant) -> Rec {
        let since = unix_ms(self.wall(r.since)) / 1000;
        let mut rec = Rec::new()
            .field("name", r.name())
            .field("state", r.state.as_str())
            .field("pid", r.pid.map_or("-".to_string(), |p| p.to_string()))
            .field("restarts", r.restarts())
            .field("since", rfc3339_secs(since))
            .field(
                "for_s",
                format!(
                    "{:.1}",
                    now.saturating_duration_since(r.since).as_secs_f64()
                ),
            )
            .field("slice", &r.spec.slice)
            .field("order", r.spec.order)
            .field("restart", r.spec.restart.as_str());
        if let Some(cg) = &self.cgroups {
            rec.push(
                "scope",
                cg.scope_path(&r.spec.slice, r.name(), r.scope).display(),
            );
        }
        if let Some(e) = &r.last_exit {
            rec.push("last_exit", e.exit.describe());
            if e.oom {
                rec.push("oom_killed", true);
            }
        }
        if r.oom_kills > 0 {
            rec.push("oom_kills", r.oom_kills);
        }
        match r.healthy {
            Some(true) => rec.push("health", "healthy"),
            Some(false) => rec.push("health", "unhealthy"),
            None if r.spec.health.is_some() => rec.push("health", "unknown"),
            None => {}
        }
        if let Some(s) = &r.status_text {
            rec.push("status", s);
        }
        if let Some(why) = &r.reason {
            rec.push("reason", why);
        }
        rec
    }
}

fn unknown(name: &str) -> String {
    err_line(ExitCode::Invalid, &format!("unknown service \"{name}\""))
}

/// The options an operation takes, and what kind of value each has.
#[derive(Clone, Copy)]
enum OptKind {
    Bool,
    Number,
}

fn allowed_options(words: &[&str]) -> &'static [(&'static str, OptKind)] {
    match words {
        ["service", "start" | "stop" | "restart", ..] => &[("wait", OptKind::Bool)],
        ["service", "logs", ..] => &[("lines", OptKind::Number), ("follow", OptKind::Bool)],
        ["shutdown", ..] => &[("reboot", OptKind::Bool)],
        _ => &[],
    }
}

/// Every `key=value` of `req` is one its operation takes, with a value of
/// the right kind.
fn check_options(words: &[&str], req: &Request) -> Result<(), String> {
    let allowed = allowed_options(words);
    let op: String = words.iter().take(2).copied().collect::<Vec<_>>().join(" ");
    for (k, v) in req.options() {
        let Some((_, kind)) = allowed.iter().find(|(name, _)| *name == k) else {
            let takes = if allowed.is_empty() {
                "none".to_string()
            } else {
                allowed
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            return Err(format!(
                "unknown option \"{k}\" for \"{op}\" (options: {takes})"
            ));
        };
        let good = match kind {
            OptKind::Bool => parse_bool(v).is_some(),
            OptKind::Number => v.parse::<u64>().is_ok(),
        };
        if !good {
            let want = match kind {
                OptKind::Bool => "true or false",
                OptKind::Number => "a number",
            };
            return Err(format!("{k}=\"{v}\" is not {want}"));
        }
    }
    Ok(())
}

fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

fn is_true(v: Option<&str>) -> bool {
    v.and_then(parse_bool) == Some(true)
}
