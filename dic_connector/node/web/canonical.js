// Canonical JSON (RFC 8785, the subset of dic_connector/trust/canonical.py): what is signed.
//
// Object members sorted by their names as UTF-16 code units (RFC 8785 3.2.3; JavaScript's
// default string order is exactly that), no whitespace, strings escaped minimally (3.2.2.2:
// JSON.stringify escapes only '"', '\' and U+0000..U+001F, short forms and lowercase \u00xx),
// integers in the I-JSON safe range only; floats and lone surrogates are refused, as the
// Python side refuses them, so both sides produce the same bytes or none.

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

export class CanonicalJSONError extends Error {}

function string(value, path) {
  if (LONE_SURROGATE.test(value)) {
    throw new CanonicalJSONError(`${path}: string contains a lone surrogate`);
  }
  return JSON.stringify(value);
}

function serialise(value, out, path) {
  if (value === null) {
    out.push("null");
  } else if (value === true || value === false) {
    out.push(String(value));
  } else if (typeof value === "number") {
    if (!Number.isInteger(value)) {
      throw new CanonicalJSONError(`${path}: floating-point numbers are not canonicalised`);
    }
    if (!Number.isSafeInteger(value)) {
      throw new CanonicalJSONError(`${path}: integer outside the I-JSON safe range`);
    }
    out.push(String(value === 0 ? 0 : value));
  } else if (typeof value === "string") {
    out.push(string(value, path));
  } else if (Array.isArray(value)) {
    out.push("[");
    value.forEach((item, i) => {
      if (i) out.push(",");
      serialise(item, out, `${path}[${i}]`);
    });
    out.push("]");
  } else if (typeof value === "object") {
    const names = Object.keys(value).sort();
    out.push("{");
    names.forEach((name, i) => {
      if (i) out.push(",");
      out.push(string(name, path));
      out.push(":");
      serialise(value[name], out, `${path}.${name}`);
    });
    out.push("}");
  } else {
    throw new CanonicalJSONError(`${path}: unsupported type ${typeof value}`);
  }
}

/** The RFC 8785 canonical text of `value` (the subset above). */
export function canonicalJson(value) {
  const out = [];
  serialise(value, out, "$");
  return out.join("");
}
