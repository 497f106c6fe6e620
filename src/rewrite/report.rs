//! What the rewriter found, fused and skipped (and why), per pattern; printed for people or as JSON.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{Fusion, Layout};

#[derive(Debug, Clone, Serialize)]
pub struct Fused {
    pub pattern: String,
    pub output: String,
    pub layout: String,
    pub causal: bool,
    pub scale: Option<f64>,
    pub softcap: f64,
    pub window_left: i64,
    pub mask: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Skip {
    pub pattern: String,
    pub at: String,
    pub reason: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub fused: Vec<Fused>,
    pub skipped: Vec<Skip>,
    pub nodes_before: usize,
    pub nodes_after: usize,
    pub removed_dead: usize,
    pub seconds: f64,
    /// The graph's shapes were only consistent at batch 1 (probe.rs BATCH1_PROBES): the export fixes batch 1
    /// in places, so it and the rewritten model run at batch 1 only.
    pub batch1_only: bool,
    /// Written-out RMSNorms replaced by one normalization node (`--fuse-rmsnorm`).
    pub rmsnorms_fused: usize,
}

impl Report {
    pub fn skip(&mut self, pattern: &str, at: &str, reason: &str) {
        self.skipped.push(Skip { pattern: pattern.into(), at: at.into(), reason: reason.into() });
    }

    pub fn fused(&mut self, f: &Fusion) {
        self.fused.push(Fused {
            pattern: f.pattern.into(),
            output: f.output.clone(),
            layout: match f.layout {
                Layout::Bsnh => "BSNH".into(),
                Layout::Bnsh => "BNSH".into(),
                Layout::ThreeD(h) => format!("3D, {h} heads"),
            },
            causal: f.causal,
            scale: f.scale,
            softcap: f.softcap,
            window_left: f.window_left,
            mask: f.mask_note.clone(),
        });
    }

    /// Fused count per pattern.
    pub fn per_pattern(&self) -> BTreeMap<String, (usize, usize)> {
        let mut m: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for f in &self.fused {
            m.entry(f.pattern.clone()).or_default().0 += 1;
        }
        for s in &self.skipped {
            m.entry(s.pattern.clone()).or_default().1 += 1;
        }
        m
    }

    pub fn human(&self) -> String {
        let mut s = String::new();
        for (p, (f, k)) in self.per_pattern() {
            s += &format!("  pattern {p:<12} fused {f:>3}   skipped {k:>3}\n");
        }
        for f in &self.fused {
            s += &format!(
                "  fused   [{}] → {}  layout {}{}{}  scale {}  mask: {}\n",
                f.pattern,
                f.output,
                f.layout,
                if f.causal { ", causal" } else { "" },
                if f.softcap != 0.0 { format!(", softcap {}", f.softcap) } else { String::new() },
                f.scale.map(|x| format!("{x:.6}")).unwrap_or("default".into()),
                f.mask
            );
        }
        for k in &self.skipped {
            s += &format!("  skipped [{}] at {}: {}\n", k.pattern, k.at, k.reason);
        }
        if self.rmsnorms_fused > 0 {
            s += &format!("  fused   {} RMSNorm(s) into one normalization node each\n", self.rmsnorms_fused);
        }
        if self.batch1_only {
            s += "  note: probed at batch 1 — the export fixes batch 1 in places although its inputs declare a dynamic \
                  batch (torch.export specializes an axis whose example size is 1); export with batch ≥ 2 for a model \
                  that serves batches\n";
        }
        s += &format!(
            "  nodes {} → {} ({} dead nodes removed), {:.3} s\n",
            self.nodes_before, self.nodes_after, self.removed_dead, self.seconds
        );
        s
    }
}
