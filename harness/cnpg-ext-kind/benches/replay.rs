//! Harness CPU for *observing* a recorded 3-instance rolling update, offline: the rollout
//! watcher lists and watches a fake API replaying hand-written frames (initial LIST of the
//! Cluster and its pods, then the newline-delimited watch events, JSON decoding included),
//! then every instance is inspected (pod spec check + parsing of recorded exec output).
//! Observation only: the verifier's judgment needs start times and SQL answers from live
//! instances, which a replay does not have, so it is not run here and not measured. Every
//! run's record and observations are checked; a run that fails them panics before any
//! figure is printed.
//!
//! `cargo bench -p cnpg-ext-kind --bench replay`

use std::sync::Arc;
use std::time::Duration;

use cnpg_ext_backend::Backend;
use cnpg_ext_kind::apply::cluster_resource;
use cnpg_ext_kind::testing::fixtures::{self, Vol};
use cnpg_ext_kind::testing::FakeApi;
use cnpg_ext_kind::testing::FakeExec;
use cnpg_ext_kind::watch::{Expect, RolloutWatch};
use cnpg_ext_kind::{KindBackend, KindOptions};
use cnpg_ext_model::plan::{ClusterPlan, PlanOptions};
use cnpg_ext_model::Manifest;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DynamicObject};

const NS: &str = "bench";

fn cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let cluster = match Manifest::parse(
        std::path::Path::new("c.yaml"),
        "apiVersion: postgresql.cnpg.io/v1\nkind: Cluster\nmetadata: {name: c}\nspec:\n  instances: 3\n  postgresql:\n    extensions:\n      - name: pgvector\n        image: {reference: \"ghcr.io/cloudnative-pg/pgvector:0.8.1-18-trixie\"}\n",
    )
    .unwrap()
    .remove(0)
    {
        Manifest::Cluster(c) => c.cluster,
        _ => unreachable!(),
    };
    let plan = ClusterPlan::derive(&cluster, &PlanOptions::default());
    let vols = [Vol {
        volume: "ext-pgvector",
        image: "ghcr.io/cloudnative-pg/pgvector:0.8.1-18-trixie",
        mount: "/extensions/pgvector",
        keep_image: true,
    }];
    let exec_out = "@@pid 17\n@@environ read\n@@mount present /extensions/pgvector\n@@file /extensions/pgvector lib/vector.so\n@@file /extensions/pgvector share/extension/vector.control\n@@file /extensions/pgvector share/extension/vector--0.8.1.sql\n@@write refused /extensions/pgvector\n";

    let run_once = || async {
        let api = FakeApi::new();
        fixtures::serve_frames(&api, NS, "c", 3, &fixtures::three_instance_rollout(), &vols);
        for i in 1..=3 {
            api.on(
                "GET",
                &format!("{}/c-{i}", fixtures::pods_path(NS)),
                vec![fixtures::pod(NS, "c", &format!("c-{i}"), "u", "replica", true, &vols)],
            );
        }
        let client = api.client();
        let clusters: Api<DynamicObject> = Api::namespaced_with(client.clone(), NS, &cluster_resource());
        let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
        let watch = RolloutWatch::start(&clusters, &pods, "c", Duration::from_secs(60)).await.unwrap();
        let record = watch.finish(Expect::Rollout, Duration::from_secs(60)).await.unwrap();
        assert_eq!(record.restarts.len(), 3);
        let names: Vec<&str> = record.restarts.iter().map(|r| r.instance.as_str()).collect();
        let mut distinct = names.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct, ["c-1", "c-2", "c-3"], "{names:?}");
        let exec = FakeExec::default();
        for i in 1..=3 {
            exec.set(&format!("c-{i}"), exec_out);
        }
        let b = KindBackend::new(client, NS, KindOptions::default()).with_exec(Arc::new(exec));
        for i in 1..=3 {
            let o = b.inspect(&format!("c-{i}"), &plan).await.unwrap();
            assert_eq!(o.mounts.len(), 1);
            assert!(o.mounts[0].present && o.mounts[0].path == "/extensions/pgvector", "{o:?}");
            assert_eq!(o.mounts[0].files.len(), 3);
        }
        record
    };

    // Warm up (first-use allocations, lazy statics).
    rt.block_on(run_once());
    let n = 200u32;
    let cpu0 = cpu_time();
    let wall0 = std::time::Instant::now();
    for _ in 0..n {
        rt.block_on(run_once());
    }
    let cpu = (cpu_time() - cpu0) / n;
    let wall = wall0.elapsed() / n;
    println!(
        "observation of a replayed 3-instance rolling update (watch of {} hand-written frames, 3 inspections; no judgment): {:.3} ms harness CPU per run ({:.3} ms wall), mean of {n} runs; budget 10 ms",
        fixtures::three_instance_rollout().len(),
        cpu.as_secs_f64() * 1e3,
        wall.as_secs_f64() * 1e3
    );
    if cpu > Duration::from_millis(10) {
        eprintln!("over budget");
        std::process::exit(1);
    }
}
