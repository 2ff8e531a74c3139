// Forms generated from an analysis's parameter schema (GET /v1/analyses, JSON Schema).
//
// One field per property: a string is a text field (a column name is offered from the
// datasets' columns), a boolean a checkbox, a number an input, an array of numbers or
// strings a comma-separated list, anything else (a filter's $ref) a JSON text area. Values
// are read back into the parameters object that is signed: numbers that are not integers
// stay decimal strings, since canonical JSON has no floats.

function field(name, spec, required, columns) {
  const label = document.createElement("label");
  label.className = "param";
  const caption = document.createElement("span");
  caption.textContent = `${name}${required ? "" : " (optional)"}`;
  label.appendChild(caption);
  let input;
  if (spec.const !== undefined) {
    input = document.createElement("input");
    input.value = JSON.stringify(spec.const);
    input.disabled = true;
    input.dataset.kind = "const";
  } else if (spec.type === "boolean") {
    input = document.createElement("input");
    input.type = "checkbox";
    input.dataset.kind = "boolean";
  } else if (spec.type === "integer" || spec.type === "number") {
    input = document.createElement("input");
    input.type = "number";
    input.dataset.kind = spec.type;
  } else if (spec.type === "array") {
    input = document.createElement("input");
    input.placeholder = "comma-separated";
    input.dataset.kind = "array";
    input.dataset.items = (spec.items && spec.items.type) || "string";
  } else if (spec.type === "string") {
    input = document.createElement("input");
    input.dataset.kind = "string";
    if (name === "column" && columns.length) {
      input.setAttribute("list", "columns");
    }
  } else {
    input = document.createElement("textarea");
    input.placeholder = "JSON";
    input.dataset.kind = "json";
  }
  input.name = name;
  input.id = `param-${name}`;
  if (required && input.dataset.kind !== "boolean") input.required = true;
  label.appendChild(input);
  if (spec.description) {
    const hint = document.createElement("small");
    hint.textContent = spec.description;
    label.appendChild(hint);
  }
  return label;
}

/** Fill `container` with the fields of `schema`; a datalist offers `columns`. */
export function renderForm(container, schema, columns) {
  container.replaceChildren();
  const list = document.createElement("datalist");
  list.id = "columns";
  for (const column of columns) {
    const option = document.createElement("option");
    option.value = column;
    list.appendChild(option);
  }
  container.appendChild(list);
  const required = new Set(schema.required || []);
  for (const [name, spec] of Object.entries(schema.properties || {})) {
    container.appendChild(field(name, spec, required.has(name), columns));
  }
}

function number(text) {
  const trimmed = text.trim();
  if (!/^-?[0-9]+(\.[0-9]+)?$/.test(trimmed)) throw new Error(`"${text}" is not a number`);
  return /^-?[0-9]+$/.test(trimmed) ? Number(trimmed) : trimmed;
}

/** The parameters the fields of `container` hold (empty optional fields left out). */
export function readForm(container) {
  const out = {};
  for (const input of container.querySelectorAll("input[name], textarea[name]")) {
    const kind = input.dataset.kind;
    if (kind === "const") continue;
    if (kind === "boolean") {
      if (input.checked) out[input.name] = true;
      continue;
    }
    const text = input.value.trim();
    if (!text) continue;
    if (kind === "integer" || kind === "number") out[input.name] = number(text);
    else if (kind === "array") {
      const items = text.split(",").map((s) => s.trim()).filter(Boolean);
      out[input.name] = input.dataset.items === "string" ? items : items.map(number);
    } else if (kind === "json") out[input.name] = JSON.parse(text);
    else out[input.name] = text;
  }
  return out;
}
