// The bounds of a request as plain values, without the schema library: schemas.ts builds the
// HTTP contract from them, and `zviz run` checks its flags against them without loading
// what the HTTP contract needs.
export const MAX_CODE_BYTES = 1024 * 1024;
export const MAX_STDIN_BYTES = 1024 * 1024;
export const MAX_ARGS = 256;
export const MAX_ARG_CHARS = 4096;
export const MAX_ENV_ENTRIES = 128;
export const MAX_ENV_VALUE_CHARS = 32768;
export const ENV_KEY_PATTERN = /^[A-Za-z_][A-Za-z0-9_]{0,127}$/;
export const PROFILE_NAME_PATTERN = /^[a-z][a-z0-9-]{0,62}$/;
export const FUNCTION_NAME_PATTERN = /^[a-z][a-z0-9-]{0,62}$/;
export const MAX_CALLBACK_URL_CHARS = 2048;
export const DEFAULT_PROFILE = 'default';
