//! A serving workload: when each request arrives, its prompt ids and how many tokens it
//! generates (EOS ignored, so the length is exact and the engine and simulator agree).
//!
//! Every draw comes from one seeded [`SplitMix64`], in a fixed order (per request: arrival gap,
//! prompt length, output length, tenant, then the prompt's ids), so a workload is a pure
//! function of its spec.

use super::rng::SplitMix64;
use crate::error::{EngineError, Result};

/// When requests arrive.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Arrival {
    /// Every request at t = 0 (an offline batch job, nano-vllm's benchmark).
    AllAtOnce,
    /// A Poisson process of `rate` requests per second (independent users).
    Poisson { rate: f64 },
    /// One request every `interval` seconds.
    Interval { interval: f64 },
}

impl Arrival {
    /// `all`, `poisson:RATE` (requests/s) or `interval:SECONDS`.
    pub fn parse(s: &str) -> Result<Self> {
        let positive = |v: &str| {
            v.parse::<f64>()
                .ok()
                .filter(|x| x.is_finite() && *x > 0.0)
                .ok_or_else(|| bad(format!("--arrival: {v:?} is not a positive number")))
        };
        match s.split_once(':') {
            None if s == "all" => Ok(Arrival::AllAtOnce),
            Some(("poisson", r)) => Ok(Arrival::Poisson { rate: positive(r)? }),
            Some(("interval", t)) => Ok(Arrival::Interval {
                interval: positive(t)?,
            }),
            _ => Err(bad(format!(
                "--arrival must be all, poisson:RATE or interval:SECONDS, got {s:?}"
            ))),
        }
    }
}

/// A length distribution: `fixed:N` or `uniform:LO-HI` (inclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LengthDist {
    Fixed(usize),
    Uniform(usize, usize),
}

impl LengthDist {
    pub fn parse(flag: &str, s: &str) -> Result<Self> {
        let num = |v: &str| {
            v.parse::<usize>()
                .ok()
                .filter(|&n| n >= 1)
                .ok_or_else(|| bad(format!("{flag}: {v:?} is not a length >= 1")))
        };
        match s.split_once(':') {
            Some(("fixed", n)) => Ok(LengthDist::Fixed(num(n)?)),
            Some(("uniform", range)) => {
                let (lo, hi) = range
                    .split_once('-')
                    .ok_or_else(|| bad(format!("{flag}: uniform needs LO-HI, got {range:?}")))?;
                let (lo, hi) = (num(lo)?, num(hi)?);
                if lo > hi {
                    return Err(bad(format!("{flag}: {lo} > {hi}")));
                }
                Ok(LengthDist::Uniform(lo, hi))
            }
            _ => Err(bad(format!(
                "{flag} must be fixed:N or uniform:LO-HI, got {s:?}"
            ))),
        }
    }

    pub fn max(&self) -> usize {
        match *self {
            LengthDist::Fixed(n) | LengthDist::Uniform(_, n) => n,
        }
    }

    fn draw(&self, rng: &mut SplitMix64) -> usize {
        match *self {
            LengthDist::Fixed(n) => n,
            LengthDist::Uniform(lo, hi) => rng.range(lo, hi),
        }
    }
}

/// Everything that defines a workload.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadSpec {
    pub num_requests: usize,
    pub arrival: Arrival,
    pub prompt_len: LengthDist,
    pub output_len: LengthDist,
    /// Tenants and their share of the requests (empty: every request is tenant "").
    pub tenants: Vec<(String, f64)>,
    /// The first this-many prompt ids are the same in every request (a system prompt), so
    /// prefix caching has something to hit; the prompt length includes them.
    pub shared_prefix: usize,
    /// Prompt ids are drawn from `0..vocab_size`.
    pub vocab_size: usize,
    pub seed: u64,
}

/// One request of a workload.
#[derive(Debug, Clone, PartialEq)]
pub struct SimRequest {
    /// Seconds after the start.
    pub arrival_s: f64,
    pub prompt: Vec<u32>,
    /// Tokens it generates (EOS is ignored).
    pub output_len: usize,
    pub tenant: String,
}

impl WorkloadSpec {
    /// The requests, in arrival order.
    pub fn generate(&self) -> Result<Vec<SimRequest>> {
        if self.vocab_size == 0 {
            return Err(bad("the workload's vocabulary is empty".into()));
        }
        if self
            .tenants
            .iter()
            .any(|(_, w)| !(w.is_finite() && *w > 0.0))
        {
            return Err(bad("--tenant shares must be positive numbers".into()));
        }
        let mut rng = SplitMix64::new(self.seed);
        let prefix: Vec<u32> = (0..self.shared_prefix)
            .map(|_| rng.range(0, self.vocab_size - 1) as u32)
            .collect();
        let total_share: f64 = self.tenants.iter().map(|(_, w)| w).sum();
        let mut t = 0.0;
        let mut out = Vec::with_capacity(self.num_requests);
        for i in 0..self.num_requests {
            t += match self.arrival {
                Arrival::AllAtOnce => 0.0,
                Arrival::Poisson { rate } => rng.exponential(rate),
                Arrival::Interval { interval } => {
                    if i == 0 {
                        0.0
                    } else {
                        interval
                    }
                }
            };
            let prompt_len = self.prompt_len.draw(&mut rng).max(self.shared_prefix);
            let output_len = self.output_len.draw(&mut rng);
            let tenant = if self.tenants.is_empty() {
                String::new()
            } else {
                let mut x = rng.next_f64() * total_share;
                let mut pick = &self.tenants[self.tenants.len() - 1].0;
                for (name, w) in &self.tenants {
                    if x < *w {
                        pick = name;
                        break;
                    }
                    x -= w;
                }
                pick.clone()
            };
            let mut prompt = prefix.clone();
            prompt.extend(
                (self.shared_prefix..prompt_len).map(|_| rng.range(0, self.vocab_size - 1) as u32),
            );
            out.push(SimRequest {
                arrival_s: t,
                prompt,
                output_len,
                tenant,
            });
        }
        Ok(out)
    }
}

fn bad(msg: String) -> EngineError {
    EngineError::InvalidArgument(msg)
}
