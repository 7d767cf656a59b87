//! Per-node figures of a run with several gateway nodes (from each node's `/metrics`), and the
//! shared Redis's CPU (from its `INFO`, over a plain RESP exchange).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::report::NodeFigures;
use super::target::{http_client, metric_sum, metric_sum_where, scrape};

/// Each node's figures and its Redis round trips, in node order; a node whose page cannot
/// be read counts zeros.
pub async fn scrape_nodes(urls: &[String]) -> Vec<(NodeFigures, u64)> {
    let client = http_client();
    let mut out = Vec::with_capacity(urls.len());
    for url in urls {
        let text = scrape(&client, url).await.unwrap_or_default();
        let count = |name: &str| metric_sum(&text, name).unwrap_or(0.0) as u64;
        out.push((
            NodeFigures {
                started: count("gateway_authorizations_started_total"),
                answers_received: metric_sum_where(
                    &text,
                    "gateway_smpp_pdus_total",
                    &[("command", "deliver_sm"), ("direction", "in")],
                )
                .unwrap_or(0.0) as u64,
                prompts_sent: count("gateway_prompts_total"),
                cross_node_answers: count("gateway_cross_node_answers_total"),
            },
            count("gateway_store_round_trips_total"),
        ));
    }
    out
}

/// `used_cpu_user + used_cpu_sys` of the Redis at `url` (`redis://host:port/...`), or `None`.
pub async fn redis_cpu_seconds(url: &str) -> Option<f64> {
    let info = redis_info(url, "cpu").await?;
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    Some(field("used_cpu_user")? + field("used_cpu_sys")?)
}

/// One `INFO section` over a fresh connection (no authentication: a loopback test server).
async fn redis_info(url: &str, section: &str) -> Option<String> {
    let rest = url.strip_prefix("redis://")?;
    let host_port = rest.split('/').next()?.rsplit('@').next()?;
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(host_port).await.ok()?;
        let cmd = format!("*2\r\n$4\r\nINFO\r\n${}\r\n{section}\r\n", section.len());
        s.write_all(cmd.as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = s.read(&mut chunk).await.ok()?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            // A bulk string: `$len\r\n` + len bytes + `\r\n`.
            if let Some(end) = buf.iter().position(|b| *b == b'\n') {
                let len: usize = std::str::from_utf8(buf.get(1..end.saturating_sub(1))?)
                    .ok()?
                    .parse()
                    .ok()?;
                if buf.len() >= end + 1 + len {
                    return Some(
                        String::from_utf8_lossy(&buf[end + 1..end + 1 + len]).into_owned(),
                    );
                }
            }
        }
        None
    };
    tokio::time::timeout(Duration::from_secs(2), exchange)
        .await
        .ok()
        .flatten()
}
