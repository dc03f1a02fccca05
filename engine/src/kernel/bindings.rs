//! Host-side bindings generated from the WIT contract in `sdk/wit`.

wasmtime::component::bindgen!({
    path: "../sdk/wit",
    world: "kernel",
    imports: { default: async | trappable },
    exports: { default: async },
});
