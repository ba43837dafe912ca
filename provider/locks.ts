// Operations on one domain run one at a time within a provider process: libvirt
// holds a job lock per domain, and queueing here is cheaper and clearer than
// colliding there. Other processes are handled by the runner's busy retry.
const tails = new Map<string, Promise<unknown>>();

export async function withDomainLock<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const previous = tails.get(key) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((r) => {
        release = r;
    });
    const tail = previous.then(() => mine);
    tails.set(key, tail);
    try {
        await previous.catch(() => undefined);
        return await fn();
    } finally {
        release();
        if (tails.get(key) === tail) tails.delete(key);
    }
}
