// The Restate side of the side-by-side benchmark: a workflow of three
// steps, each a journaled `ctx.run` (the same shape as firedrill's
// engine-only runbook), served over HTTP/2 on loopback.
//
//   node service.mjs PORT
// Prints "listening on PORT" once it accepts connections.

// Node 20 lacks Promise.withResolvers, which SDK 1.17 uses.
if (!Promise.withResolvers) {
  Promise.withResolvers = function () {
    let resolve, reject;
    const promise = new Promise((res, rej) => {
      resolve = res;
      reject = rej;
    });
    return { promise, resolve, reject };
  };
}

const http2 = await import("node:http2");
const restate = await import("@restatedev/restate-sdk");

const threeSteps = restate.workflow({
  name: "ThreeSteps",
  handlers: {
    run: async (ctx) => {
      const probe = await ctx.run("probe", () => Date.now());
      const act = await ctx.run("act", () => (probe > 0 ? Date.now() : 0));
      const verify = await ctx.run("verify", () => Date.now());
      return { probe, act, verify };
    },
  },
});

const port = Number(process.argv[2]);
const handler = restate.createEndpointHandler({
  services: [threeSteps],
  logger: () => {},
});
// restate.serve() binds every interface; this binds loopback only.
http2.createServer(handler).listen(port, "127.0.0.1", () => {
  console.log(`listening on ${port}`);
});
