//! Replays the committed fuzz corpora (and any regressions) through the fuzz entry points on
//! stable, so CI checks them without cargo-fuzz.

use tollgate_core::testing::fuzz;

#[test]
fn gateway_config_corpus() {
    let replayed = fuzz::replay("gateway_config", tollgate_gateway::fuzzing::gateway_config);
    assert!(replayed.corpus > 0, "no corpus for gateway_config");
}

#[test]
fn route_table_corpus() {
    let replayed = fuzz::replay("route_table", tollgate_gateway::fuzzing::route_table);
    assert!(replayed.corpus > 0, "no corpus for route_table");
}

#[test]
fn gateway_h1_corpus() {
    let replayed = fuzz::replay("gateway_h1", tollgate_gateway::fuzzing::gateway_h1);
    assert!(replayed.corpus > 0, "no corpus for gateway_h1");
}

#[test]
fn proxy_header_corpus() {
    let replayed = fuzz::replay("proxy_header", tollgate_gateway::fuzzing::proxy_header);
    assert!(replayed.corpus > 0, "no corpus for proxy_header");
}
