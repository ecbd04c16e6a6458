//! Shared harness of the REST tests (registry, poller): a REST-only simulator on a manual clock,
//! on its own tokio runtime in background threads, and a client clock that advances the same
//! manual time when the client sleeps, so every wait is exact.

use std::sync::Arc;

use kdp_ingest::rest::{Clock, RestClient, RestConfig};
use kdp_sim::market::MarketConfig;
use kdp_sim::transport::hub::Clock as HubClock;
use kdp_sim::transport::rest::{ManualClock, RestConfig as SimRestConfig};
use kdp_sim::transport::{SimConfig, SimHandle, Simulator};

/// The client's clock: a manual clock; sleeping advances it.
pub struct TestClock(pub ManualClock);

impl Clock for TestClock {
    fn now_ns(&self) -> i64 {
        self.0.now_ns()
    }
    fn unix_ns(&self) -> i64 {
        self.0.now_ns()
    }
    fn sleep_ns(&self, ns: i64) {
        self.0.advance_ns(ns);
    }
}

/// A running REST-only simulator; shut down on drop.
pub struct Sim {
    pub rt: tokio::runtime::Runtime,
    sim: Option<SimHandle>,
    _dir: tempfile::TempDir,
}

impl Sim {
    /// Starts a simulator of `markets` markets from `seed`, manual hub clock, REST only, with
    /// the given REST settings; then advances the exchange by `warm_up_events`.
    pub fn start(seed: u64, markets: usize, rest: SimRestConfig, warm_up_events: u64) -> Sim {
        eprintln!("simulator market seed {seed}, {markets} markets");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("tokio runtime: {e}"));
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let mut cfg = SimConfig::new(
            MarketConfig { seed, markets, ..MarketConfig::default() },
            dir.path().join("sim.pem"),
        );
        cfg.clock = HubClock::Manual;
        cfg.ws_addr = None;
        cfg.wss_addr = None;
        cfg.control_addr = None;
        cfg.rest = rest;
        let sim =
            rt.block_on(Simulator::start(cfg)).unwrap_or_else(|e| panic!("simulator start: {e}"));
        if warm_up_events > 0 {
            rt.block_on(sim.hub().advance(warm_up_events))
                .unwrap_or_else(|e| panic!("advance: {e:?}"));
        }
        Sim { rt, sim: Some(sim), _dir: dir }
    }

    /// The simulator.
    pub fn handle(&self) -> &SimHandle {
        self.sim.as_ref().unwrap_or_else(|| panic!("simulator already stopped"))
    }

    /// A REST client of the simulator on `clock`.
    pub fn client(&self, clock: &ManualClock) -> RestClient {
        let url = self.handle().rest_url().unwrap_or_else(|| panic!("REST listener off"));
        RestClient::new(RestConfig::new(url), Arc::new(TestClock(clock.clone())))
            .unwrap_or_else(|e| panic!("REST client: {e}"))
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        if let Some(sim) = self.sim.take() {
            self.rt.block_on(sim.shutdown());
        }
    }
}
