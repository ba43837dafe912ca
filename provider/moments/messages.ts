// What a user reads about a snapshot or checkpoint alike (and a backup's quiesce): a failed, cut-off or
// existing create, and a guest agent that can't freeze the filesystems.
import type { DomainInfo } from "../host/xml";
import type { MomentKind } from "./commands";

/** Why `quiesce` can't be honoured on a running domain: no guest agent channel, or one not connected. */
export function guestAgentMissing(dom: DomainInfo): string {
    return dom.guestAgent === "none"
        ? `domain '${dom.name}' has no QEMU guest agent channel, so its filesystems can't be frozen. ` +
              `Add a guest agent, or set quiesce: false`
        : `the QEMU guest agent of domain '${dom.name}' is not connected. Start qemu-guest-agent in the guest, or set quiesce: false`;
}

export const createSays = {
    stillListed: (kind: MomentKind, name: string, del: string) =>
        `libvirt still lists ${kind} '${name}' after the failure; refresh, or delete it with virsh ${del} before retrying`,
    outcomeUnknown: (o: { kind: MomentKind; name: string; domainName: string; what: string }) =>
        `${o.what}: whether ${o.kind} '${o.name}' of domain '${o.domainName}' exists now is unknown. ` +
        `Pulumi keeps it in the state: the next pulumi up checks the host and finishes (or re-creates) it, ` +
        `and pulumi destroy removes it if it exists.`,
    differs: (o: { kind: MomentKind; name: string; domainName: string; own: boolean; diffs: string[]; nameInput: string }) =>
        `cannot ${o.own ? "take over" : "adopt"} ${o.kind} '${o.name}' of domain '${o.domainName}'` +
        `${o.own ? ", made by this resource in a run that was cut off," : ""}: it differs from what is declared: ${o.diffs.join("; ")}. ` +
        `Change the declaration to match, or choose another ${o.nameInput}.`,
    alreadyExists: (o: { kind: MomentKind; name: string; domainName: string; where: string }) =>
        `${o.kind} '${o.name}' already exists on domain '${o.domainName}' (${o.where}). ` +
        `Set adopt: true to take it over, or choose another ${o.kind}Name.`,
};
