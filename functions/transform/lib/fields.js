// Field helpers of the transform example: plain functions on plain objects.

function isRecord(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** The fields of `record` named in `names` (all of them when `names` is not an array). */
exports.pick = function pick(record, names) {
  if (!isRecord(record)) throw new TypeError(`a record must be an object: got ${JSON.stringify(record)}`);
  if (!Array.isArray(names)) return { ...record };
  return Object.fromEntries(names.filter((n) => Object.hasOwn(record, n)).map((n) => [n, record[n]]));
};

/** `record` with the keys of `map` renamed to its values. */
exports.rename = function rename(record, map) {
  return Object.fromEntries(Object.entries(record).map(([k, v]) => [Object.hasOwn(map, k) ? String(map[k]) : k, v]));
};
