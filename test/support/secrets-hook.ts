// A mocha root hook: after the whole run, search everything the provider sent
// back through the engine-path harness (outputs outside secret markers, error
// details, server logs) for the lab's private key, its passphrase and the
// password. None may appear.
import * as fs from "node:fs";
import { transcript } from "../harness/engine";
import { labJsonPath, loadLab } from "./lab";

/** Child processes (the example runner) add their transcripts here. */
export const extraTranscripts: string[] = [];

export function labSecrets(): Array<[string, string]> {
    if (!fs.existsSync(labJsonPath())) return [];
    const lab = loadLab();
    const key = fs.readFileSync(lab.privateKeyPath, "utf8");
    const lines = key
        .split("\n")
        .map((l) => l.trim())
        .filter((l) => l.length >= 20 && !l.startsWith("-----"));
    return [
        ["the lab's private key", key.trim()],
        ...lines.map((l, i): [string, string] => [`line ${i + 1} of the lab's private key`, l]),
        ["the encrypted key's passphrase", lab.keyPassphrase],
        ["labuser's password", lab.sudoUser.password],
    ];
}

/** Which of the secrets (by default the lab's) occur in the text. */
export function findLeaks(text: string, secrets: Array<[string, string]> = labSecrets()): string[] {
    return secrets.filter(([, s]) => s && text.includes(s)).map(([what]) => what);
}

export const mochaHooks = {
    afterAll(this: unknown) {
        const text = [...transcript, ...extraTranscripts].join("\n");
        const found = findLeaks(text);
        if (found.length) throw new Error(`secrets leaked into provider outputs, errors or logs: ${found.join(", ")}`);
        console.log(
            `  secrets check: searched ${transcript.length + extraTranscripts.length} provider replies and logs (${text.length} characters) for ${labSecrets().length} secrets: none found`,
        );
    },
};
