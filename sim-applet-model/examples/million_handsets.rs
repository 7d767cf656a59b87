//! Allocate 1,000,000 idle handsets, touch each, and print the count and the per-handset size.
//! Measure the process with `/usr/bin/time -v cargo run --release -p sim-applet-model --example
//! million_handsets` (maximum resident set size).

use std::sync::Arc;

use sim_applet_model::handset::{Handset, HandsetParams};

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let params = Arc::new(HandsetParams::default());
    let handsets: Vec<Handset> = (0..n)
        .map(|i| Handset::new(params.clone(), i, i % 2 == 0))
        .collect();
    // Touch every handset so none of the allocation is optimised away or left untouched.
    let idle = handsets
        .iter()
        .filter(|h| h.is_idle() && h.poll_timeout().is_none())
        .count();
    let with_applet = handsets.iter().filter(|h| h.has_applet()).count();
    let size = std::mem::size_of::<Handset>();
    println!("handsets: {}", handsets.len());
    println!("idle: {idle}, with applet: {with_applet}");
    println!(
        "size_of::<Handset>() = {size} bytes; {} handsets = {:.1} MiB of handset structs",
        handsets.len(),
        (size * handsets.len()) as f64 / (1024.0 * 1024.0)
    );
}
