// Preloaded into the provider server with NODE_OPTIONS=--require (Node 20 refuses
// --cpu-prof there) when BENCH_CPU_PROF=DIR is set: records a V8 CPU profile from
// start to SIGTERM (how the harness stops the server) and writes it to DIR.
import * as fs from "node:fs";
import * as inspector from "node:inspector";
import * as path from "node:path";

const dir = process.env.BENCH_CPU_PROF;
if (dir) {
    const session = new inspector.Session();
    session.connect();
    session.post("Profiler.enable", () =>
        session.post("Profiler.setSamplingInterval", { interval: 200 }, () => session.post("Profiler.start")),
    );
    process.once("SIGTERM", () => {
        session.post("Profiler.stop", (err, res) => {
            if (!err) {
                fs.mkdirSync(dir, { recursive: true });
                fs.writeFileSync(
                    path.join(dir, `${process.env.BENCH_PROFILE_LABEL ?? "server"}-${process.pid}.cpuprofile`),
                    JSON.stringify(res.profile),
                );
            }
            process.exit(0);
        });
    });
}
