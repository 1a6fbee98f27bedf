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
        text: [
          "Answer Yes once the other agent is talking with the customer.",
          reportHint(t.phone),
        ].filter(Boolean),
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

// How strong the phone side's word is (transfer.phone.proof), in the agent's words.
export const PROOF_LABELS = {
  none: "No word from the phone yet",
  pbx_reported: "Reported by the PBX only (nobody at the target answered yet)",
  target_answered: "The other agent answered with the customer",
  consult_replaced: "Your answered consult call was handed to the customer",
};

export const FAILURE_LABELS = {
  target_busy: "the other agent's phone was busy",
  target_rejected: "the other agent's phone refused the call",
  target_no_answer: "nobody answered at the other agent's phone",
  target_unavailable: "the other agent's phone could not be reached",
  customer_hung_up: "the customer hung up",
  refer_rejected: "the customer's call refused the transfer",
  transfer_failed: "the PBX could not transfer the call",
};

// A SIP status line that says a transfer failed (3xx-6xx).
export const FAILURE_STATUS = /^SIP\/2\.0 [3-6]/;

// The cause in a word or two, after the reason of a failure in the evidence list.
const CAUSE_WORDS = {
  target_busy: "busy",
  target_rejected: "refused",
  target_no_answer: "no answer",
  target_unavailable: "unreachable",
};

// A PBX's "transfer done" comes before anyone answers (early media, a ringing target): the
// agent is told so, and their own answer decides until the other agent's phone answers.
function reportHint(phone) {
  if (phone.proof !== "pbx_reported") return null;
  return "The PBX reports the transfer went through, but the other agent's phone has not " +
    "answered yet as far as the bridge can see: answer Yes only if you heard them take the call.";
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
  const cause = FAILURE_LABELS[s.transfer.phone.failure];
  // Only a failure status explains a failure (a PBX's earlier "200 OK" report does not).
  const detail = frag && FAILURE_STATUS.test(frag) ? frag : null;
  const why = cause || detail ? ` (${[cause, detail].filter(Boolean).join(": ")})` : "";
  const next = s.call.state === "ended" ? "" : " The customer is still on your call.";
  return `The phone reports that the transfer failed${why}.${next}`;
}

const REASONS = {
  notify_2xx: "its NOTIFY, before anyone may have answered (not proof)",
  notify_2xx_consult_answered: "your answered consult call was handed to the customer",
  target_leg_answered: "the other agent's phone answered with the customer",
  target_leg_failed: "the other agent's phone did not take the call",
  customer_dropped: "the PBX dropped the customer",
  pbx_blind_transfer: "it sent the customer on (not proof)",
  pbx_attended_transfer_early: "it handed over a consult that still rang (not proof)",
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
    case "transfer_reported":
      return `PBX reports success${why ? `: ${why}` : ""}${frag}`;
    case "transfer_succeeded":
      return `Transfer succeeded${why ? `: ${why}` : ""}${frag}`;
    case "transfer_failed": {
      const cause = CAUSE_WORDS[d.cause] ? `, ${CAUSE_WORDS[d.cause]}` : "";
      return `Transfer failed${why ? `: ${why}${cause}` : ""}${frag}`;
    }
    default:
      return entry.event.replaceAll("_", " ");
  }
}
