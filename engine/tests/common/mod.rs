// Each test binary uses part of what is here.
#![allow(dead_code)]

pub mod gpu;
pub mod greedy_compare;
pub mod lab_cli;
pub mod scratch_dir;
