//! The daemon's memory over the soak: samples of its resident size (from /proc) and of
//! what its metrics say it holds, taken on a thread every few seconds, and the
//! least-squares slope of the resident size after the warm-up.
use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use serde::Serialize;

use super::daemon::Daemon;

/// One look at the daemon.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Seconds since the load started.
    pub t_s: f64,
    pub rss_bytes: u64,
    /// Its own account (`sockscope_resident_memory_bytes`).
    pub rss_metric_bytes: f64,
    pub tracked_sockets: f64,
    pub tracked_pcs: f64,
    pub marked_processes: f64,
    /// Open sockets of marked processes that are not the soak's (other users' on a
    /// shared host): the daemon holds those too.
    pub other_sockets: f64,
    pub events: f64,
    pub lost: f64,
    /// Entries in use in the daemon's BPF stack map(s).
    pub stack_map_entries: Option<u64>,
}

pub fn sample(d: &Daemon, t0: Instant) -> anyhow::Result<Sample> {
    let m = d.scrape()?;
    Ok(Sample {
        t_s: t0.elapsed().as_secs_f64(),
        rss_bytes: d.rss_bytes()?,
        rss_metric_bytes: m.total("sockscope_resident_memory_bytes"),
        tracked_sockets: m.total("sockscope_tracked_sockets"),
        tracked_pcs: m.total("sockscope_tracked_peer_connections"),
        marked_processes: m.total("sockscope_marked_processes"),
        other_sockets: m
            .samples
            .iter()
            .filter(|(n, l, _)| {
                n == "sockscope_udp_sockets_open"
                    && !l.get("comm").is_some_and(|c| c.starts_with("pc_sim-"))
            })
            .map(|(_, _, v)| v)
            .sum::<f64>()
            + 0.0,
        events: m.total("sockscope_events_total"),
        lost: m.total("sockscope_events_lost_total"),
        stack_map_entries: d
            .bpf_objects()
            .ok()
            .and_then(|o| o.stack_map_fill())
            .map(|(used, _)| used),
    })
}

/// Samples `d` every `interval` until `running` goes false; the samples so far are in
/// `out`.
pub fn sample_while(
    d: &Daemon,
    t0: Instant,
    interval: Duration,
    running: &AtomicBool,
    out: &Arc<Mutex<Vec<Sample>>>,
) {
    while running.load(Ordering::Relaxed) {
        match sample(d, t0) {
            Ok(s) => {
                if let Ok(mut v) = out.lock() {
                    v.push(s);
                }
            }
            Err(e) => eprintln!("soak: cannot sample the daemon: {e:#}"),
        }
        let until = Instant::now() + interval;
        while running.load(Ordering::Relaxed) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Least-squares slope of y over x.
fn slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    if points.len() < 3 {
        return None;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

/// The median of the pairwise slopes (Theil–Sen).
fn theil_sen(points: &[(f64, f64)]) -> Option<f64> {
    let mut slopes = Vec::new();
    for (i, a) in points.iter().enumerate() {
        for b in &points[i + 1..] {
            if b.0 > a.0 {
                slopes.push((b.1 - a.1) / (b.0 - a.0));
            }
        }
    }
    if slopes.len() < 3 {
        return None;
    }
    slopes.sort_by(f64::total_cmp);
    Some(slopes[slopes.len() / 2])
}

/// The resident size after the warm-up.
#[derive(Debug, Serialize)]
pub struct Fit {
    pub warmup_s: f64,
    /// Samples after the warm-up, and the minutes they span.
    pub samples: usize,
    pub window_min: f64,
    /// Least squares over the samples (each the median of itself and its neighbours).
    pub slope_bytes_per_min: Option<f64>,
    /// The median of the slopes between every two samples: a single lasting step
    /// (the heap's high-water mark rising once) leaves it near zero, a steady growth
    /// does not.
    pub theil_sen_bytes_per_min: Option<f64>,
    /// What the slope adds over the window.
    pub growth_bytes: Option<f64>,
    pub allowed_growth_bytes: f64,
    pub mean_bytes: f64,
    pub after_warmup_bytes: f64,
    pub max_bytes: f64,
    /// Other marked processes' open sockets over the window (min, max).
    pub other_sockets: (f64, f64),
}

/// The fit over the samples after the warm-up: the first fifth of the load, at least
/// 30 s (at most half of it): the daemon's heap reaches its working size over the first
/// processes (programs' symbols parsed, tables sized by the PeerConnections within
/// their grace), so a short run needs the longer warm-up. Flat: what the slope adds
/// over the window is within 5% of the mean resident size, or 4 MiB (allocator noise
/// on a small heap), whichever is more.
pub fn fit(samples: &[Sample], load_s: f64) -> Fit {
    let warmup_s = (load_s * 0.2).max(30.0_f64.min(load_s * 0.5));
    let steady: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.t_s >= warmup_s && s.t_s <= load_s)
        .collect();
    // A rolling median of three: a sample the daemon took during a burst (a transient
    // allocation, freed a second later) does not tilt the line; a lasting step does.
    let raw: Vec<f64> = steady.iter().map(|s| s.rss_bytes as f64).collect();
    let points: Vec<(f64, f64)> = steady
        .iter()
        .enumerate()
        .map(|(i, s)| {
            // The first and last samples have one neighbour: kept as they are.
            let v = match (i.checked_sub(1).and_then(|j| raw.get(j)), raw.get(i + 1)) {
                (Some(&a), Some(&c)) => {
                    let mut w = [a, raw[i], c];
                    w.sort_by(f64::total_cmp);
                    w[1]
                }
                _ => raw[i],
            };
            (s.t_s / 60.0, v)
        })
        .collect();
    let per_min = slope(&points);
    let robust = theil_sen(&points);
    let window_min = match (points.first(), points.last()) {
        (Some(a), Some(b)) => b.0 - a.0,
        _ => 0.0,
    };
    let mean = points.iter().map(|p| p.1).sum::<f64>() / points.len().max(1) as f64;
    let others: Vec<f64> = steady.iter().map(|s| s.other_sockets).collect();
    Fit {
        warmup_s,
        samples: points.len(),
        window_min,
        slope_bytes_per_min: per_min,
        theil_sen_bytes_per_min: robust,
        growth_bytes: per_min.map(|s| s * window_min),
        allowed_growth_bytes: (0.05 * mean).max(4.0 * 1024.0 * 1024.0),
        mean_bytes: mean,
        after_warmup_bytes: points.first().map_or(0.0, |p| p.1),
        max_bytes: points.iter().map(|p| p.1).fold(0.0, f64::max),
        other_sockets: if others.is_empty() {
            (0.0, 0.0)
        } else {
            (
                others.iter().copied().fold(f64::INFINITY, f64::min),
                others.iter().copied().fold(0.0, f64::max),
            )
        },
    }
}
