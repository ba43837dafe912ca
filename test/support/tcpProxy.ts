// A TCP proxy in this process in front of a lab host's sshd: it can hold back the
// host's replies (a slow network) or cut every connection and refuse new ones (the
// network is gone), without touching sshd or other test runs' connections.
import * as net from "node:net";

export interface TcpProxy {
    readonly port: number;
    /** Replies from the host are delayed by this much (0: none). */
    delayMs: number;
    /** Drop every connection through the proxy and stop listening: new connections are refused. */
    cut(): void;
    close(): void;
}

export async function tcpProxy(host: string, port: number): Promise<TcpProxy> {
    const sockets = new Set<net.Socket>();
    const server = net.createServer((client) => {
        const upstream = net.connect(port, host);
        sockets.add(client).add(upstream);
        client.on("data", (d) => upstream.write(d));
        upstream.on("data", (d) => {
            const ms = proxy.delayMs;
            if (ms) setTimeout(() => client.write(d), ms);
            else client.write(d);
        });
        const end = () => {
            client.destroy();
            upstream.destroy();
            sockets.delete(client);
            sockets.delete(upstream);
        };
        client.on("error", end);
        upstream.on("error", end);
        client.on("close", end);
        upstream.on("close", end);
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const proxy: TcpProxy = {
        port: (server.address() as net.AddressInfo).port,
        delayMs: 0,
        cut() {
            server.close();
            for (const s of sockets) s.destroy();
            sockets.clear();
        },
        close: () => proxy.cut(),
    };
    return proxy;
}
