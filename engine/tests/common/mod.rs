pub mod greedy_compare;
