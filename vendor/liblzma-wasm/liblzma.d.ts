/** Instantiates the module (Emscripten's loader): resolves to the module's exports and heap views. */
export default function createLZMA (options?: Record<string, unknown>): Promise<unknown>
