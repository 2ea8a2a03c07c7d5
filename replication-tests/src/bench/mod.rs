//! The `tether-bench` workloads: real provider and consumer processes on loopback,
//! timed from outside as a user would see them. One module per workload; [`report`]
//! is what they all produce, [`cluster`] what they all run on.

pub mod burst;
pub mod client;
pub mod cluster;
pub mod cpu;
pub mod data;
pub mod detect;
pub mod fanout;
pub mod latency;
pub mod refresh;
pub mod report;
pub mod resync;
pub mod rss;
