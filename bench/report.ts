// What the benchmark prints on stdout: the table, the targets line, and as the last line
// one JSON object with every figure. Phases add rows and figures as they finish.

/** The figures of the final JSON line, in the order the phases set them. */
export const results: Record<string, unknown> = {};

const table: string[] = [];

export function row(label: string, ...cols: string[]): void {
    table.push(`${label.padEnd(44)} ${cols.map((c) => c.padStart(12)).join(" ")}`);
}

const targets: Array<[string, string, (v: number) => boolean]> = [
    ["perOpVsShell", "<= 1.3", (v) => v <= 1.3],
    ["perOpRatio", "<= 0.9", (v) => v <= 0.9],
    ["roundTripsPerOp", "<= 3", (v) => v <= 3],
    ["fanoutRatio", "<= 1.3", (v) => v <= 1.3],
    ["fanoutVsLocalParallel", "<= 1.0", (v) => v <= 1.0],
    ["cpuPerCreateRatio", "<= 1.0", (v) => v <= 1.0],
    ["handshakesPerHost", "== 1", (v) => v === 1],
    ["hosts50", "<= 1.3", (v) => v <= 1.3],
    ["hosts50HandshakesPerEndpoint", "== 1", (v) => v === 1],
    ["hosts50RssGrowthPerEndpointMB", "<= 1", (v) => v <= 1],
    ["peakRssMB", "< 150", (v) => v < 150],
    ["rssOverFloorMB", "<= 8", (v) => v <= 8],
    ["scaleRatio200", "<= 1.5", (v) => v <= 1.5],
    ["scaleGrowthVsLibvirt", "<= 1.1", (v) => v <= 1.1],
    ["cliUpVsSshLoop", "<= 1.0", (v) => v <= 1.0],
    ["cliDestroyVsSshLoop", "<= 1.0", (v) => v <= 1.0],
];

export function printReport(): void {
    console.log(table.join("\n"));
    console.log(
        `targets: ${targets.map(([k, t, ok]) => `${k} ${t} ${typeof results[k] !== "number" ? "not measured" : ok(results[k] as number) ? "met" : "MISSED"}`).join("; ")}`,
    );
    console.log(JSON.stringify(results));
}
