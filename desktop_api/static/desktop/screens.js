// What the agent sees for a session: the seed's screens and labels, and the phone evidence in
// words. Pure functions of the API's JSON; app.js turns them into the page.

export const STATUS_LABELS = { active: "Active", call_transferred: "Call transferred", ended: "Ended" };
export const CALL_LABELS = {
  none: "No call",
  ringing: "Ringing",
  connected: "Connected",
  on_hold: "On hold",
  ended: "Ended",
};

const DISMISS = { action: "transfer.dismiss", label: "Dismiss", kind: "secondary" };

// The screen for a session: {id, title, text[], status?, buttons[{action, label, kind?}], reason?}.
// A button is enabled exactly when the session's `actions` lists its action.
export function screenFor(s) {
  const t = s.transfer;
  if (s.status === "ended") {
    return { id: "ended", title: "Session ended", text: [`Result: ${s.result ?? ""}`], buttons: [] };
  }
  switch (t.state) {
    case "offered":
      return {
        id: "choice",
        title: "Transfer Call",
        text: ["Transfer the customer to another agent, or dismiss."],
        buttons: [{ action: "transfer.internal", label: "Internal transfer" }, DISMISS],
      };
    case "dialing":
      return {
        id: "dial",
        title: "Dial on your phone",
        text: [
          "Enter the phone number on your own phone to transfer the call.",
          dialHint(t.phone),
          "Once you have started dialling, click Next.",
        ].filter(Boolean),
        buttons: [{ action: "transfer.next", label: "Next" }, DISMISS],
      };
    case "confirming":
      return {
        id: "question",
        title: "Is the other agent talking with the customer?",
        text: ["Answer Yes once the other agent is talking with the customer."],
        buttons: [
          { action: "transfer.confirm", label: "Yes" },
          { action: "transfer.deny", label: "No", kind: "secondary" },
          DISMISS,
        ],
      };
    case "transferred":
      if (!t.acknowledged) {
        return {
          id: "confirmation",
          title: "Customer transferred",
          text: [
            "The customer has been transferred and the phone call has ended.",
            provedText(t),
            "The session stays open until you end it with a result.",
          ].filter(Boolean),
          buttons: [{ action: "transfer.acknowledge", label: "OK" }],
        };
      }
      break;
    default:
      break;
  }
  const reason = t.unavailable ? `Transfer Call is unavailable: ${t.unavailable.message}` : null;
  return {
    id: "overview",
    title: "Overview",
    text: [],
    status: STATUS_LABELS[s.status] ?? s.status,
    buttons: [{ action: "transfer.open", label: "Transfer Call" }],
    reason: s.actions.includes("transfer.open") ? null : reason,
  };
}

function dialHint(phone) {
  if (phone.consult === "dialing" || phone.consult === "ringing") return "Your phone is dialling.";
  if (phone.consult === "answered") return "Your phone's consult call was answered.";
  return null;
}

function provedText(t) {
  if (t.confirmed_by === "phone") {
    return "Your phone confirmed the transfer, so there is nothing more to answer.";
  }
  if (t.confirmed_by === "phone_and_agent") return "Your phone confirmed it too.";
  return null;
}

export function conflictText(c) {
  const detail = c.detail ? ` (${c.detail})` : "";
  if (c.desktop === "confirm") {
    return `Conflict: you answered Yes, but the phone reports that the transfer failed${detail}. ` +
      "The phone wins: the customer was not transferred.";
  }
  if (c.desktop === "deny") {
    return `Conflict: you answered No, but the phone shows that the transfer succeeded${detail}. ` +
      "The phone wins: the call was transferred.";
  }
  return `Conflict: the desktop said ${c.desktop}, the phone says ${c.phone}${detail}. The phone wins.`;
}

export function failureText(s) {
  const frag = s.transfer.phone.last_sipfrag;
  const why = frag && !frag.startsWith("SIP/2.0 1") ? ` (${frag})` : "";
  const next = s.call.state === "ended" ? "" : " The customer is still on your call.";
  return `The phone reports that the transfer failed${why}.${next}`;
}

const REASONS = {
  notify_2xx: "the customer's phone reached the other agent",
  dialog_replaced: "the customer's call was handed to the other agent",
  notify_failure: "the other agent's phone did not take the call",
  refer_rejected: "the customer's phone refused the transfer",
  customer_hung_up: "the customer hung up",
  pbx_target_answered: "the other agent answered the customer (PBX)",
  pbx_attended_transfer: "the PBX connected the customer to the other agent",
  pbx_dial_busy: "the other agent was busy (PBX)",
  pbx_dial_noanswer: "the other agent did not answer (PBX)",
  pbx_blind_invalid: "the PBX refused the transfer",
  pbx_blind_fail: "the PBX could not transfer the call",
};

// One audit entry from the phone, in words; null for what the agent need not see.
export function phoneEntry(entry) {
  if (entry.kind === "system" && entry.event === "sources_disagree") {
    const d = entry.detail ?? {};
    return `Sources disagree: ${d.other_source} reported a failure, ` +
      `${d.kept_source} proved the transfer succeeded (kept)`;
  }
  if (entry.kind !== "phone" || entry.detail?.ignored) return null;
  const d = entry.detail ?? {};
  const to = d.target ? ` ${d.target}` : "";
  const why = REASONS[d.reason] ?? (d.reason ? d.reason.replaceAll("_", " ") : null);
  const frag = d.sipfrag ? ` (${d.sipfrag})` : "";
  switch (entry.event) {
    case "call_state":
      return `Call ${(CALL_LABELS[d.state] ?? d.state).toLowerCase()}`;
    case "consult":
      return {
        dialing: `Consult call dialling${to}`,
        ringing: `Consult call ringing${to}`,
        answered: `Consult call answered${to}`,
        ended: "Consult call ended",
      }[d.state] ?? `Consult call ${d.state}`;
    case "transfer_requested":
      return `Transfer requested (${d.kind ?? "unknown kind"})${to ? ` to${to}` : ""}`;
    case "transfer_progress":
      if (d.refer === "accepted") return "Transfer accepted";
      return `Transfer ${d.refer}${frag}`;
    case "transfer_succeeded":
      return `Transfer succeeded${why ? `: ${why}` : ""}${frag}`;
    case "transfer_failed":
      return `Transfer failed${why ? `: ${why}` : ""}${frag}`;
    default:
      return entry.event.replaceAll("_", " ");
  }
}
