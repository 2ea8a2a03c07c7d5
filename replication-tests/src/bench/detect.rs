//! `detect`: how quickly a dead link is noticed. A persisting consumer connects through
//! the fault proxy; the proxy black-holes the link (`Stall` both ways, sockets left
//! open) or stalls only the provider's sending, and the clock runs until the
//! consumer's status counts one more `keepalive-timeout` disconnect. A change is
//! written meanwhile; after healing, the second clock runs until it is durable on the
//! consumer (converged). Each fault kind is repeated; every round must be detected
//! within keepalive timeout + interval.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use tokio::runtime::Runtime;

use super::client;
use super::cluster::{Cluster, AGREEMENT, STEP};
use super::data;
use super::report::{Bound, Report};
use crate::proxy::{Direction, Fault};

/// The consumer's keepalive interval and timeout (the harness's agreement settings).
const KEEPALIVE: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(5));
/// People in the directory.
const PEOPLE: usize = 1_000;

/// The keepalive-timeout disconnects counted so far.
async fn timeouts(cluster: &Cluster) -> Result<u64> {
    let s = client::agreement_status(&cluster.control(0), AGREEMENT).await?;
    Ok(s["disconnects"]["keepalive-timeout"].as_u64().unwrap_or(0))
}

/// Runs the workload, `rounds` times per fault kind.
pub fn run(rt: &Runtime, rounds: usize) -> Result<Report> {
    let mut cluster = Cluster::provider(PEOPLE)?;
    cluster.start_proxy()?;
    let i = cluster.add_consumer(true)?;
    cluster.consumers[i].start()?;
    let limit = KEEPALIVE.0 + KEEPALIVE.1;
    let mut r = Report::new("detect");
    r.param("rounds", rounds).param("keepalive_interval_s", 1).param("keepalive_timeout_s", 5);
    rt.block_on(async {
        cluster.wait_persisting(i, STEP).await?;
        let kinds = [("black hole", [Fault::Stall, Fault::Stall]), ("provider stall", [Fault::Pass, Fault::Stall])];
        let mut op = 0;
        for (name, [up, down]) in kinds {
            let (mut worst_detect, mut worst_converge) = (Duration::ZERO, Duration::ZERO);
            for _ in 0..rounds {
                cluster.wait_persisting(i, STEP).await?;
                let before = timeouts(&cluster).await?;
                let proxy = cluster.proxy()?;
                proxy.set_fault_on(Direction::ToUpstream, up);
                proxy.set_fault_on(Direction::ToClient, down);
                let faulted = Instant::now();
                while timeouts(&cluster).await? == before {
                    if faulted.elapsed() > limit * 4 {
                        bail!("{name}: no keepalive-timeout after {:?}", faulted.elapsed());
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                worst_detect = worst_detect.max(faulted.elapsed());
                op += 1;
                // A fresh connection: the provider closes write clients idle this long.
                let mut writer = cluster.writer().await?;
                let csn = writer.write(data::modify(op, op)?).await?;
                writer.close().await;
                proxy.heal();
                let healed = Instant::now();
                client::wait_csn(&cluster.control(i), AGREEMENT, csn, Duration::from_secs(60)).await?;
                worst_converge = worst_converge.max(healed.elapsed());
            }
            r.target(
                &format!("{name}: worst detection"),
                worst_detect.as_secs_f64(),
                "s",
                Bound::AtMost,
                limit.as_secs_f64(),
            );
            r.figure(&format!("{name}: worst heal to converged"), worst_converge.as_secs_f64(), "s");
        }
        anyhow::Ok(())
    })?;
    if !cluster.identical(i)? {
        bail!("after the faults the replica differs from the provider's directory");
    }
    r.fact("content", "identical to the provider's");
    Ok(r)
}
