import mysql, { type RowDataPacket } from 'mysql2/promise'
import type { MysqlStoreConfig } from '../config/schema.js'
import { BastionError } from '../errors.js'
import { createMysqlPool, REQUIRED_COLUMNS, type OptionalColumn } from './mysql.js'

// Definitions of what `db migrate` adds. Nothing here drops, renames or rewrites data.
const OPTIONAL_DDL: Record<OptionalColumn, string> = {
  enabled: 'TINYINT(1) NOT NULL DEFAULT 1',
  lastStep: 'BIGINT NULL',
  createdAt: 'TIMESTAMP NULL DEFAULT CURRENT_TIMESTAMP'
}

export interface TableReport {
  tableExists: boolean
  missingRequired: string[]
  missingOptional: string[]
}

async function withPool<T> (cfg: MysqlStoreConfig, fn: (pool: mysql.Pool) => Promise<T>): Promise<T> {
  const pool = createMysqlPool(cfg)
  try {
    return await fn(pool)
  } catch (err) {
    if (err instanceof BastionError) throw err
    const code = (err as { code?: string }).code ?? (err as Error).message
    throw new BastionError('BASTION_ERR_BACKEND_UNAVAILABLE', `mysql ${cfg.host}:${cfg.port}/${cfg.database}: ${code}`, { cause: err })
  } finally {
    await pool.end().catch(() => {})
  }
}

async function presentColumns (pool: mysql.Pool, table: string): Promise<Set<string> | undefined> {
  const [rows] = await pool.query<RowDataPacket[]>('SELECT COLUMN_NAME AS name FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?', [table])
  return rows.length === 0 ? undefined : new Set(rows.map((r) => String(r.name).toLowerCase()))
}

/** Connects and compares the table with what the store reads. */
export async function checkTable (cfg: MysqlStoreConfig): Promise<TableReport> {
  return await withPool(cfg, async (pool) => {
    const cols = await presentColumns(pool, cfg.table)
    if (cols === undefined) return { tableExists: false, missingRequired: REQUIRED_COLUMNS.map((c) => cfg.columns[c]), missingOptional: Object.keys(OPTIONAL_DDL).map((c) => cfg.columns[c as OptionalColumn]) }
    return {
      tableExists: true,
      missingRequired: REQUIRED_COLUMNS.map((c) => cfg.columns[c]).filter((n) => !cols.has(n.toLowerCase())),
      missingOptional: (Object.keys(OPTIONAL_DDL) as OptionalColumn[]).map((c) => cfg.columns[c]).filter((n) => !cols.has(n.toLowerCase()))
    }
  })
}

/**
 * Creates the table when it does not exist (the shape existing deployments use, plus the
 * optional columns) and adds missing optional columns otherwise. Idempotent. Returns the
 * statements it ran, for the operator to read.
 */
export async function migrateTable (cfg: MysqlStoreConfig): Promise<string[]> {
  return await withPool(cfg, async (pool) => {
    const t = mysql.escapeId(cfg.table)
    const c = (k: keyof MysqlStoreConfig['columns']): string => mysql.escapeId(cfg.columns[k])
    const ran: string[] = []
    const cols = await presentColumns(pool, cfg.table)
    if (cols === undefined) {
      const sql = `CREATE TABLE ${t} (id INT AUTO_INCREMENT PRIMARY KEY, ${c('username')} VARCHAR(64) NOT NULL UNIQUE, ` +
        `${c('password')} VARCHAR(100) NOT NULL, ${c('totpSecret')} VARCHAR(64) NOT NULL, ` +
        (Object.keys(OPTIONAL_DDL) as OptionalColumn[]).map((k) => `${c(k)} ${OPTIONAL_DDL[k]}`).join(', ') + ')'
      await pool.query(sql)
      return [sql]
    }
    const missing = REQUIRED_COLUMNS.filter((k) => !cols.has(cfg.columns[k].toLowerCase()))
    if (missing.length > 0) {
      throw new BastionError('BASTION_ERR_USER_STORE', `table ${cfg.table} lacks required column(s) ${missing.map((k) => cfg.columns[k]).join(', ')}: set auth.store.columns to its names; migrate never rewrites existing columns`)
    }
    for (const k of Object.keys(OPTIONAL_DDL) as OptionalColumn[]) {
      if (cols.has(cfg.columns[k].toLowerCase())) continue
      const sql = `ALTER TABLE ${t} ADD COLUMN ${c(k)} ${OPTIONAL_DDL[k]}`
      await pool.query(sql)
      ran.push(sql)
    }
    return ran
  })
}
