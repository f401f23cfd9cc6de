//! Unit-level models of the budget: a property test against a reference model, and a loom
//! model of concurrent withdrawals.

#[cfg(not(loom))]
mod budget_model;
#[cfg(loom)]
mod loom_budget;
