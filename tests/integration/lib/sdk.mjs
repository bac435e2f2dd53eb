// Re-exports the packages of tests/integration/node_modules for scripts outside this folder
// (scripts/demo.mjs), which cannot resolve them from their own location.
export { default as OpenAI } from 'openai';
export { ethers } from 'ethers';
export { ed25519 } from '@noble/curves/ed25519.js';
