#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tollgate_gateway::fuzzing::gateway_h1(data));
