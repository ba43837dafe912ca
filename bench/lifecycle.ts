// Progress on stderr, and the cleanup stack that removes everything the benchmark made
// (domains, provider servers, its sshd) on success, failure, SIGINT and SIGTERM.

export function log(...a: unknown[]): void {
    console.error("bench:", ...a);
}

const cleanups: Array<() => Promise<unknown>> = [];

/** Registers an undo step; steps run last-registered first. */
export function onCleanup(f: () => Promise<unknown>): void {
    cleanups.push(f);
}

export async function cleanupAll(): Promise<void> {
    while (cleanups.length) {
        const f = cleanups.pop()!;
        try {
            await f();
        } catch (e) {
            log(`cleanup: ${(e as Error).message}`);
        }
    }
}

let interrupted = false;
for (const sig of ["SIGINT", "SIGTERM"] as const) {
    process.on(sig, () => {
        if (interrupted) return;
        interrupted = true;
        log(`${sig}: cleaning up`);
        void cleanupAll().finally(() => process.exit(130));
    });
}
