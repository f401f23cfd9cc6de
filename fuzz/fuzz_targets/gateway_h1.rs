#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tollgate::gateway::fuzzing::gateway_h1(data));
