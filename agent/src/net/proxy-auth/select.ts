// Which scheme answers a proxy's 407: the strongest it offers that can run here (Negotiate,
// then NTLM, then Digest, then Basic), or the one `--proxy-auth` pins.
import { basic } from "./basic.ts";
import { digest } from "./digest.ts";
import { negotiate } from "./negotiate.ts";
import { ntlm } from "./ntlm.ts";
import { type AuthContext, type Challenge, type ProxyAuthExchange, type ProxyAuthScheme, SchemeUnavailable } from "./scheme.ts";

/** Strongest first. */
export const SCHEMES: readonly ProxyAuthScheme[] = [negotiate, ntlm, digest, basic];

/** What `--proxy-auth` takes. */
export const SCHEME_NAMES = SCHEMES.map((scheme) => scheme.name);

/** No scheme of the proxy's can run here: what it offers and why each cannot. */
export class NoUsableScheme extends Error {
  override readonly name = "NoUsableScheme";

  constructor(
    message: string,
    readonly hint: string,
  ) {
    super(message);
  }
}

/**
 * Starts an exchange with the first scheme of SCHEMES that the proxy offers (or `pinned`) and
 * that can run here.
 * @throws {NoUsableScheme} naming what the proxy offers and why none of it can be used.
 */
export async function selectScheme(
  challenges: readonly Challenge[],
  context: AuthContext,
  pinned: string | undefined,
): Promise<{ exchange: ProxyAuthExchange; challenge: Challenge }> {
  const offered = [...new Set(challenges.map((challenge) => challenge.scheme))];
  if (offered.length === 0) {
    throw new NoUsableScheme(
      "it names no scheme to answer with (no Proxy-Authenticate field)",
      "a proxy names the schemes it takes in its 407: check that this is the proxy your network's settings name",
    );
  }
  const list = offered.join(", ");
  const candidates = pinned ? SCHEMES.filter((scheme) => scheme.name === pinned) : SCHEMES;
  const reasons: SchemeUnavailable[] = [];
  // A pinned scheme is told only of its own challenges: the user ruled the others out, so
  // Negotiate without a ticket sends NTLM inside itself even where the proxy offers NTLM alone.
  const offering = pinned ? challenges.filter((c) => c.name === pinned) : challenges;
  for (const scheme of candidates) {
    const challenge = challenges.find((c) => c.name === scheme.name);
    if (!challenge) continue;
    try {
      return { exchange: await scheme.start(context, offering), challenge };
    } catch (error) {
      if (!(error instanceof SchemeUnavailable)) throw error;
      reasons.push(error);
    }
  }
  if (pinned && reasons.length === 0) {
    throw new NoUsableScheme(
      `--proxy-auth ${pinned}: the proxy does not offer it; it offers ${list}`,
      "leave --proxy-auth out to let the agent choose, or pin one the proxy offers",
    );
  }
  if (reasons.length === 0) {
    throw new NoUsableScheme(
      `the proxy offers ${list}, none of which this agent speaks (it speaks Negotiate, NTLM, Digest and Basic)`,
      "ask the network's administrators for a way out that one of these schemes opens",
    );
  }
  const why = reasons.map((reason) => `${reason.scheme}: ${reason.message}`).join("; ");
  throw new NoUsableScheme(`the proxy offers ${list}, and none can be used here (${why})`, reasons.at(-1)!.hint);
}
